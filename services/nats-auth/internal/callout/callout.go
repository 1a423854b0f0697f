// Package callout answers NATS' auth callout: for every client that
// connects, the NATS server asks it who the client is and what it may do.
// It gives each pod of a Deployment a NATS user of its own, which NATS'
// configuration-file users cannot (ADR 012): a pod proves who it is with
// its projected ServiceAccount token, which the kube-apiserver reviews,
// and becomes the user named after the pod, with its role's permissions
// written over that name ("{user}" in a subject). Services with one
// instance, or none to confine, keep a password, checked against its
// bcrypt hash.
package callout

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/tether-dev/tether/lib/subject"
)

// Role is what one kind of client may do, and how it proves who it is:
// with a password (PasswordHash) or with a ServiceAccount token
// (ServiceAccount), never both.
type Role struct {
	// Name is the NATS user of a password role; of a token role, only
	// what logs and metrics call it: its users are named after their pods.
	Name string
	// PasswordHash is the bcrypt hash of the role's password.
	PasswordHash []byte
	// ServiceAccount is the username the kube-apiserver gives the role's
	// tokens: system:serviceaccount:NAMESPACE:NAME.
	ServiceAccount string
	// Publish and Subscribe allow subjects ("subject queue" for a queue
	// group); "{user}" stands for the user's name. Empty allows nothing.
	Publish, Subscribe []string
	// Responses lets the user answer requests whatever their reply subject.
	Responses bool
}

// Review is what the kube-apiserver said of a token.
type Review struct {
	// Username is system:serviceaccount:NAMESPACE:NAME.
	Username string
	// Pod is the pod the token is bound to ("" for a token bound to none).
	Pod string
}

// TokenReviewer asks the kube-apiserver whom a token belongs to.
type TokenReviewer interface {
	Review(ctx context.Context, token string) (Review, error)
}

// Config configures a Callout.
type Config struct {
	// Issuer is the account key named as auth_callout's issuer in the
	// server's configuration: it signs every answer.
	Issuer nkeys.KeyPair
	// Account is where users go ("$G", the global account, without
	// accounts in the configuration).
	Account string
	Roles   []Role
	// Reviews checks ServiceAccount tokens; required when a role has one.
	Reviews TokenReviewer
	Log     *slog.Logger
	// Registerer gets tether_nats_auth_total{role,result}.
	Registerer prometheus.Registerer
	// ReviewCache is how long a reviewed token is believed without asking
	// again (a reconnect storm of every pod costs the kube-apiserver one
	// review per pod); 0 means a minute.
	ReviewCache time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Callout authorizes NATS clients.
type Callout struct {
	cfg       Config
	passwords map[string]*Role
	accounts  map[string]*Role
	auths     *prometheus.CounterVec

	mu sync.Mutex
	// reviews remembers answers by the token's hash: bounded by
	// maxReviews, emptied when full.
	reviews map[[sha256.Size]byte]cachedReview
}

type cachedReview struct {
	review Review
	until  time.Time
}

// maxReviews bounds the reviews kept: about one per pod of a token role.
const maxReviews = 10000

// New checks cfg.
func New(cfg Config) (*Callout, error) {
	if cfg.Issuer == nil || cfg.Log == nil || cfg.Registerer == nil {
		return nil, errors.New("callout: Issuer, Log and Registerer are required")
	}
	if pub, err := cfg.Issuer.PublicKey(); err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return nil, errors.New("callout: the issuer must be an account key (a seed starting SA)")
	}
	if cfg.Account == "" {
		cfg.Account = "$G"
	}
	if cfg.ReviewCache == 0 {
		cfg.ReviewCache = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Callout{cfg: cfg, passwords: map[string]*Role{}, accounts: map[string]*Role{}, reviews: map[[sha256.Size]byte]cachedReview{},
		auths: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_nats_auth_total",
			Help: "NATS clients authorized (result ok) or refused (result: the reason), by role."}, []string{"role", "result"})}
	for i := range cfg.Roles {
		r := &cfg.Roles[i]
		switch {
		case r.Name == "":
			return nil, errors.New("callout: a role has no name")
		case (len(r.PasswordHash) == 0) == (r.ServiceAccount == ""):
			return nil, fmt.Errorf("callout: role %s needs a password hash or a service account, not both", r.Name)
		case r.ServiceAccount != "" && !strings.HasPrefix(r.ServiceAccount, "system:serviceaccount:"):
			return nil, fmt.Errorf("callout: role %s: %q is not a ServiceAccount's username", r.Name, r.ServiceAccount)
		case r.ServiceAccount != "" && cfg.Reviews == nil:
			return nil, fmt.Errorf("callout: role %s logs in with tokens, and nothing reviews them", r.Name)
		case r.ServiceAccount != "" && c.accounts[r.ServiceAccount] != nil, r.ServiceAccount == "" && c.passwords[r.Name] != nil:
			return nil, fmt.Errorf("callout: role %s is given twice", r.Name)
		}
		if len(r.PasswordHash) > 0 {
			if _, err := bcrypt.Cost(r.PasswordHash); err != nil {
				return nil, fmt.Errorf("callout: role %s: the password hash is not bcrypt: %w", r.Name, err)
			}
			c.passwords[r.Name] = r
		} else {
			c.accounts[r.ServiceAccount] = r
		}
		// A permission NATS would refuse is found now, not at a login.
		if _, err := c.userClaims(r, "UAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "check"); err != nil {
			return nil, err
		}
	}
	if err := cfg.Registerer.Register(c.auths); err != nil {
		return nil, fmt.Errorf("callout: registering metrics: %w", err)
	}
	return c, nil
}

// ErrRefused is every refusal: the server tells the client only that its
// authorization failed; the reason is logged here.
var ErrRefused = errors.New("refused")

// Authorize returns the user JWT for the client req describes, signed by
// the issuer, or an error wrapping ErrRefused.
func (c *Callout) Authorize(ctx context.Context, req *jwt.AuthorizationRequestClaims) (string, error) {
	opts := req.ConnectOptions
	role, name, err := c.identify(ctx, opts.Username, opts.Password)
	if err != nil {
		roleName := "unknown"
		if role != nil {
			roleName = role.Name
		}
		c.auths.WithLabelValues(roleName, reason(err)).Inc()
		return "", err
	}
	uc, err := c.userClaims(role, req.UserNkey, name)
	if err != nil {
		c.auths.WithLabelValues(role.Name, "error").Inc()
		return "", err
	}
	token, err := uc.Encode(c.cfg.Issuer)
	if err != nil {
		c.auths.WithLabelValues(role.Name, "error").Inc()
		return "", fmt.Errorf("callout: signing the user: %w", err)
	}
	c.auths.WithLabelValues(role.Name, "ok").Inc()
	return token, nil
}

// refusal is a refusal and why, for the metric's label.
type refusal struct {
	why, msg string
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return ErrRefused }

func refuse(why, format string, args ...any) error {
	return &refusal{why: why, msg: fmt.Sprintf(format, args...)}
}

func reason(err error) string {
	var r *refusal
	if errors.As(err, &r) {
		return r.why
	}
	return "error"
}

// identify finds the role of user and the NATS user's name.
func (c *Callout) identify(ctx context.Context, user, password string) (*Role, string, error) {
	if user == "" || password == "" {
		return nil, "", refuse("no_credentials", "no user and password")
	}
	if r := c.passwords[user]; r != nil {
		if bcrypt.CompareHashAndPassword(r.PasswordHash, []byte(password)) != nil {
			return r, "", refuse("bad_password", "user %s: wrong password", user)
		}
		return r, user, nil
	}
	if len(c.accounts) == 0 || strings.Count(password, ".") != 2 {
		return nil, "", refuse("unknown_user", "no user %s", user)
	}
	rev, err := c.review(ctx, password)
	if err != nil {
		return nil, "", err
	}
	r := c.accounts[rev.Username]
	switch {
	case r == nil:
		return nil, "", refuse("unknown_account", "%s may not use NATS", rev.Username)
	case rev.Pod == "":
		return r, "", refuse("unbound_token", "%s: the token is bound to no pod (a projected token is)", rev.Username)
	case rev.Pod != user:
		// The client names its inboxes after the user it claims: it must
		// be the pod it is.
		return r, "", refuse("wrong_pod", "%s: the token is pod %s's, not %s's", rev.Username, rev.Pod, user)
	case !subject.ValidToken(user):
		return r, "", refuse("bad_name", "pod name %q cannot name a NATS user (it must match [A-Za-z0-9_-]{1,64})", user)
	}
	return r, user, nil
}

// review asks the kube-apiserver about token, or remembers its answer.
func (c *Callout) review(ctx context.Context, token string) (Review, error) {
	sum := sha256.Sum256([]byte(token))
	now := c.cfg.Now()
	c.mu.Lock()
	cached, ok := c.reviews[sum]
	c.mu.Unlock()
	if ok && now.Before(cached.until) {
		return cached.review, nil
	}
	rev, err := c.cfg.Reviews.Review(ctx, token)
	if err != nil {
		return Review{}, err
	}
	c.mu.Lock()
	if len(c.reviews) >= maxReviews {
		clear(c.reviews)
	}
	c.reviews[sum] = cachedReview{review: rev, until: now.Add(c.cfg.ReviewCache)}
	c.mu.Unlock()
	return rev, nil
}

// userClaims is the user JWT of name in role r, for the connection's key.
func (c *Callout) userClaims(r *Role, userKey, name string) (*jwt.UserClaims, error) {
	uc := jwt.NewUserClaims(userKey)
	uc.Name = name
	uc.Audience = c.cfg.Account
	own := func(subjects []string) []string {
		out := make([]string, len(subjects))
		for i, s := range subjects {
			out[i] = strings.ReplaceAll(s, "{user}", name)
		}
		return out
	}
	if len(r.Publish) == 0 {
		uc.Pub.Deny.Add(">")
	} else {
		uc.Pub.Allow.Add(own(r.Publish)...)
	}
	if len(r.Subscribe) == 0 {
		uc.Sub.Deny.Add(">")
	} else {
		uc.Sub.Allow.Add(own(r.Subscribe)...)
	}
	if r.Responses {
		uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	}
	vr := jwt.CreateValidationResults()
	uc.Validate(vr)
	if errs := vr.Errors(); len(errs) > 0 {
		return nil, fmt.Errorf("callout: role %s: %w", r.Name, errs[0])
	}
	return uc, nil
}

// Serve answers the server's requests on nc until ctx ends, at most
// parallel at a time (a token review takes a round trip to the
// kube-apiserver; the server waits for the answer as long as its auth
// timeout). It subscribes in a queue group, so several instances share the
// work.
func (c *Callout) Serve(ctx context.Context, nc *nats.Conn, parallel int) error {
	if parallel < 1 {
		return errors.New("callout: parallel must be at least 1")
	}
	slots := make(chan struct{}, parallel)
	sub, err := nc.QueueSubscribe("$SYS.REQ.USER.AUTH", "tether-nats-auth", func(m *nats.Msg) {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		go func() {
			defer func() { <-slots }()
			c.answer(ctx, m)
		}()
	})
	if err != nil {
		return fmt.Errorf("callout: subscribing to the server's requests: %w", err)
	}
	<-ctx.Done()
	return sub.Drain()
}

// answer answers one request. An answer the server cannot read, or none,
// refuses the client all the same; the log says why.
func (c *Callout) answer(ctx context.Context, m *nats.Msg) {
	req, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
	if err != nil {
		c.cfg.Log.Warn("an auth request that is not one", "err", err)
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	rc := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	rc.Audience = req.Server.ID
	token, err := c.Authorize(rctx, req)
	if err != nil {
		// Credentials stay out of the log; the user and where from do not.
		c.cfg.Log.Warn("refused a NATS client", "user", req.ConnectOptions.Username, "host", req.ClientInformation.Host,
			"client", req.ConnectOptions.Name, "err", err)
		rc.Error = "not authorized"
	} else {
		rc.Jwt = token
	}
	out, err := rc.Encode(c.cfg.Issuer)
	if err != nil {
		c.cfg.Log.Error("signing an auth answer", "err", err)
		return
	}
	if err := m.Respond([]byte(out)); err != nil {
		c.cfg.Log.Warn("answering an auth request", "err", err)
	}
}
