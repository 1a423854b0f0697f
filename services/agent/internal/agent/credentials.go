package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/tether-dev/tether/lib/agentcred"
	"github.com/tether-dev/tether/lib/backoff"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
)

// Credential is what the agent presents on every connect.
type Credential struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	// Obtained is when it was issued to this agent: renewal is due two
	// thirds of the way to Expires.
	Obtained time.Time `json:"obtained"`
}

func (c Credential) renewAt() time.Time {
	return c.Obtained.Add(c.Expires.Sub(c.Obtained) * 2 / 3)
}

// usable: far enough from expiry to connect with (5 s, or a quarter of a
// shorter life); one past its renewal time is renewed at once by Renew.
func (c Credential) usable(now time.Time) bool {
	margin := min(5*time.Second, c.Expires.Sub(c.Obtained)/4)
	return c.Token != "" && now.Add(margin).Before(c.Expires)
}

// CredentialStore keeps the credential across restarts of the agent: a
// file outside a cluster (FileStore), a Secret inside one (SecretStore).
type CredentialStore interface {
	// Load returns the stored credential; none stored is the zero value.
	Load(ctx context.Context) (Credential, error)
	Save(ctx context.Context, c Credential) error
}

// Credentials holds the agent's credential: it enrolls with the bootstrap
// token when it has none usable, and renews before expiry.
type Credentials struct {
	ClusterID string
	// Bootstrap returns the one-time bootstrap token (read again on every
	// attempt, so an operator can replace a used one without a restart).
	Bootstrap  func() (string, error)
	Store      CredentialStore
	Enrollment tetherv1connect.EnrollmentServiceClient
	Log        *slog.Logger
	Now        func() time.Time

	mu  sync.Mutex
	cur Credential
	// refused is a token a subscriber refused (revoked): never offered to
	// a subscriber again, only to the registry, which has the last word.
	refused string
	// enrollmentID is sent with every try of one enrollment: if an answer
	// is lost, the registry answers the same agent again, though the
	// token is spent.
	enrollmentID string
}

// Refused records that a subscriber refused the current credential, so
// the next connect enrolls again instead of offering it once more.
func (c *Credentials) Refused() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur.Token != "" {
		c.refused = c.cur.Token
	}
	c.cur = Credential{}
}

func (c *Credentials) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Token returns a usable credential, from memory, the store, or a new
// enrollment.
func (c *Credentials) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur.usable(c.now()) {
		return c.cur.Token, nil
	}
	stored, err := c.Store.Load(ctx)
	if err != nil {
		c.Log.Warn("reading the stored credential", "err", err)
	}
	if stored.usable(c.now()) && stored.Token != c.refused {
		c.cur = stored
		return stored.Token, nil
	}
	// Expired while the cluster was cut off: the registry renews it for a
	// while after expiry, which spares the operator a new bootstrap token.
	// A credential a subscriber refused goes to the registry too: the
	// subscriber's view of the clusters may lag, the registry reads the
	// stream to its end before it answers, and a bootstrap token is used
	// up once the first enrollment succeeds.
	for i, old := range []Credential{c.cur, stored} {
		if old.Token == "" || (i == 1 && old.Token == c.cur.Token) {
			continue
		}
		resp, err := c.Enrollment.Renew(ctx, connect.NewRequest(&tetherv1.RenewRequest{Credential: old.Token}))
		if err != nil {
			c.Log.Warn("renewing an expired or refused credential", "err", err)
			continue
		}
		cred := fromProto(resp.Msg.GetCredential(), c.now())
		if err := c.Store.Save(ctx, cred); err != nil {
			c.Log.Error("storing the renewed credential", "err", err)
		}
		c.Log.Info("credential renewed by the registry", "expires", cred.Expires, "refused_by_subscriber", old.Token == c.refused)
		c.cur = cred
		return cred.Token, nil
	}
	bt, err := c.Bootstrap()
	if err != nil {
		return "", fmt.Errorf("no usable credential, and no bootstrap token: %w", err)
	}
	if c.enrollmentID == "" {
		c.enrollmentID = agentcred.NewID()
	}
	resp, err := c.Enrollment.Enroll(ctx, connect.NewRequest(&tetherv1.EnrollRequest{ClusterId: c.ClusterID, BootstrapToken: bt, EnrollmentId: c.enrollmentID}))
	if err != nil {
		return "", fmt.Errorf("enrolling with the bootstrap token: %w", err)
	}
	cred := fromProto(resp.Msg.GetCredential(), c.now())
	if err := c.Store.Save(ctx, cred); err != nil {
		// The credential is good for this run; only a restart would need
		// the bootstrap token again, which is now used up. Say so loudly.
		c.Log.Error("storing the new credential failed; a restart will need a new bootstrap token", "err", err)
	}
	c.Log.Info("enrolled", "expires", cred.Expires)
	c.cur = cred
	return cred.Token, nil
}

func fromProto(p *tetherv1.AgentCredential, now time.Time) Credential {
	return Credential{Token: p.GetToken(), Expires: time.Unix(p.GetExpiresUnix(), 0), Obtained: now}
}

// Renew keeps the credential fresh until ctx ends: at two thirds of its
// life it asks for a new one, retrying with jittered backoff, and passes
// each new token to renewed (which sends it on the open stream).
func (c *Credentials) Renew(ctx context.Context, renewed func(token string)) {
	b := &backoff.Backoff{Initial: time.Second, Max: time.Minute, Factor: 2}
	for {
		c.mu.Lock()
		cur := c.cur
		c.mu.Unlock()
		wait := time.Second // nothing yet: look again soon
		if cur.Token != "" {
			wait = cur.renewAt().Sub(c.now())
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if cur.Token == "" {
			continue
		}
		resp, err := c.Enrollment.Renew(ctx, connect.NewRequest(&tetherv1.RenewRequest{Credential: cur.Token}))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.Log.Warn("renewing the credential; retrying with backoff", "err", err, "expires", cur.Expires)
			if !b.Sleep(ctx) {
				return
			}
			continue
		}
		b.Reset()
		cred := fromProto(resp.Msg.GetCredential(), c.now())
		if err := c.Store.Save(ctx, cred); err != nil {
			c.Log.Error("storing the renewed credential", "err", err)
		}
		c.mu.Lock()
		c.cur = cred
		c.mu.Unlock()
		c.Log.Info("credential renewed", "expires", cred.Expires)
		renewed(cred.Token)
	}
}

// FileStore keeps the credential in a file (mode 0600), written atomically.
type FileStore struct{ Path string }

func (f FileStore) Load(context.Context) (Credential, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return Credential{}, nil
	}
	if err != nil {
		return Credential{}, fmt.Errorf("reading %s: %w", f.Path, err)
	}
	var c Credential
	if err := json.Unmarshal(b, &c); err != nil {
		return Credential{}, fmt.Errorf("parsing %s: %w", f.Path, err)
	}
	return c, nil
}

func (f FileStore) Save(_ context.Context, c Credential) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.Path), ".credential-*")
	if err != nil {
		return fmt.Errorf("saving the credential: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("saving the credential: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("saving the credential: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fmt.Errorf("saving the credential: %w", err)
	}
	return nil
}

// BootstrapFile reads a bootstrap token from a file (a mounted Secret).
func BootstrapFile(path string) func() (string, error) {
	return func() (string, error) {
		if path == "" {
			return "", errors.New("no --bootstrap-token-file")
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("%s is empty", path)
		}
		return tok, nil
	}
}
