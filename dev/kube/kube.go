// Package kube runs a real Kubernetes control plane (etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler) on loopback, for end-to-end
// tests and the developer stack. It has no nodes of its own: pods stay
// Pending until one registers (dev/kubelet, which dev/stack starts), and
// then the scheduler binds them to it. Everything the API server, the
// controllers and the scheduler do (RBAC, namespaces, ServiceAccounts,
// Deployments to ReplicaSets to pods on a node) behaves as in a production
// cluster, which fakes cannot promise.
//
// The package is Unix-only: it manages process groups.
package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/tether-dev/tether/dev/proc"
)

// stopGrace is how long a process gets between SIGTERM and SIGKILL.
const stopGrace = 10 * time.Second

// Readiness budgets. The API server is ready in about 3s on an idle machine;
// these leave room for a loaded CI runner without hanging a broken run.
const (
	etcdTimeout       = 30 * time.Second
	apiserverTimeout  = 90 * time.Second
	controllerTimeout = 90 * time.Second
	schedulerTimeout  = 60 * time.Second
	pollInterval      = 100 * time.Millisecond
)

// adminName is reserved for the system:masters user Start always adds.
const adminName = "admin"

// User is a static-token user, authenticated by --token-auth-file.
type User struct {
	Name   string
	UID    string
	Groups []string
	Token  string
}

// Config describes a control plane to start.
type Config struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager and
	// kube-scheduler, as returned by EnsureBinaries.
	BinDir string
	// Dir holds the state: certificates, etcd data, logs and kubeconfigs. It
	// is created if missing. Start regenerates the certificates and empties
	// the etcd data, so every control plane begins from a clean cluster.
	Dir string
	// Users are extra static-token users. An admin user in system:masters is
	// always added; its name is reserved.
	Users []User
	// Log receives progress lines; nil discards them. Process output goes
	// to Dir/logs/<binary>.log instead.
	Log io.Writer
}

// ControlPlane is a running control plane. Call Stop when done.
type ControlPlane struct {
	URL             string // https://127.0.0.1:PORT
	CAFile          string // CA that signed the serving certificate
	AdminKubeconfig string // kubeconfig for the admin (system:masters) user
	AdminToken      string
	// FrontProxyCert and FrontProxyKey are a client certificate the
	// kube-apiserver takes users in X-Remote-* headers from (front-proxy
	// authentication, --requestheader-*).
	FrontProxyCert, FrontProxyKey string
	// AuditLog is the kube-apiserver's audit log: every mutating request,
	// one JSON event a line (Audit reads it).
	AuditLog string

	dir    string
	log    io.Writer
	client *http.Client
	procs  []*proc.Process // in start order; stopped in reverse

	stopOnce sync.Once
	stopErr  error
}

// Start starts etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler, and returns once the API server is ready, the controller
// manager has created the "default" ServiceAccount, which pods and token
// requests need, and the scheduler says it is ready. ctx bounds
// startup only; the processes run until Stop, or until this process dies.
//
// On failure Start stops whatever it started, and the error quotes the end of
// the failing process's log.
func Start(ctx context.Context, cfg Config) (*ControlPlane, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("kube: invalid config: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	var err error
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return nil, fmt.Errorf("kube: resolve state folder: %w", err)
	}
	for attempt := 1; ; attempt++ {
		cp, err := start(ctx, cfg)
		if err == nil {
			return cp, nil
		}
		// Free ports are probed and then released, so another process can
		// take one before our child binds it. One retry makes that rare
		// race invisible; a second failure is a real problem.
		var exit *exited
		if attempt == 1 && ctx.Err() == nil && errors.As(err, &exit) && proc.PortConflict(err) {
			fmt.Fprintf(cfg.Log, "kube: %s lost a port race; retrying with new ports\n", exit.name)
			continue
		}
		return nil, fmt.Errorf("kube: start control plane: %w", err)
	}
}

func start(ctx context.Context, cfg Config) (_ *ControlPlane, err error) {
	logDir := filepath.Join(cfg.Dir, "logs")
	etcdDir := filepath.Join(cfg.Dir, "etcd")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, fmt.Errorf("create log folder: %w", err)
	}
	if err := os.RemoveAll(etcdDir); err != nil {
		return nil, fmt.Errorf("clear etcd data: %w", err)
	}
	certs, err := writeCerts(filepath.Join(cfg.Dir, "pki"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(certs.caCert)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)

	ports, err := proc.FreePorts(4)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])

	auditPolicyFile := filepath.Join(cfg.Dir, "audit-policy.yaml")
	if err := os.WriteFile(auditPolicyFile, []byte(auditPolicy), 0o600); err != nil {
		return nil, fmt.Errorf("write audit policy: %w", err)
	}
	auditLog := filepath.Join(logDir, "audit.log")
	_ = os.Remove(auditLog) // a new cluster, a new record

	admin := User{Name: adminName, UID: adminName, Groups: []string{"system:masters"}, Token: randomToken()}
	tokenFile := filepath.Join(cfg.Dir, "tokens.csv")
	if err := writeTokenFile(tokenFile, append([]User{admin}, cfg.Users...)); err != nil {
		return nil, err
	}

	cp := &ControlPlane{
		URL:            "https://127.0.0.1:" + strconv.Itoa(ports[2]),
		CAFile:         certs.caCert,
		AdminToken:     admin.Token,
		AuditLog:       auditLog,
		FrontProxyCert: certs.frontProxyCert,
		FrontProxyKey:  certs.frontProxyKey,
		dir:            cfg.Dir,
		log:            cfg.Log,
		client: &http.Client{
			Timeout: 5 * time.Second,
			Transport: &http.Transport{
				Proxy:           nil, // loopback only; never via HTTPS_PROXY
				TLSClientConfig: &tls.Config{RootCAs: pool},
			},
		},
	}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()

	etcd, err := cp.run(cfg.BinDir, logDir, "etcd",
		"--name=tether",
		"--data-dir="+etcdDir,
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=tether="+peerURL,
		"--initial-cluster-state=new",
		// Test data is disposable; fsync dominates etcd latency on CI disks.
		"--unsafe-no-fsync",
	)
	if err != nil {
		return nil, err
	}
	if err := cp.waitFor(ctx, etcd, etcdTimeout, etcdURL+"/health", ""); err != nil {
		return nil, err
	}
	fmt.Fprintf(cp.log, "kube: etcd ready on %s\n", etcdURL)

	apiserver, err := cp.run(cfg.BinDir, logDir, "kube-apiserver",
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports[2]),
		"--etcd-servers="+etcdURL,
		"--tls-cert-file="+certs.servingCert,
		"--tls-private-key-file="+certs.servingKey,
		"--client-ca-file="+certs.caCert,
		"--token-auth-file="+tokenFile,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+certs.saPub,
		"--service-account-signing-key-file="+certs.saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--kubelet-client-certificate="+certs.kubeletClientCert,
		"--kubelet-client-key="+certs.kubeletClientKey,
		"--kubelet-preferred-address-types=InternalIP",
		// There are no nodes to route the kubernetes Service to.
		"--endpoint-reconciler-type=none",
		"--audit-policy-file="+auditPolicyFile,
		"--audit-log-path="+auditLog,
		"--audit-log-maxsize=0", // one file for the cluster's life
		// Front-proxy authentication, as a managed control plane offers it
		// to aggregated API servers: a client certificate from this CA
		// with an allowed name may say who the user is in these headers.
		"--requestheader-client-ca-file="+certs.frontProxyCA,
		"--requestheader-allowed-names="+FrontProxyName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-uid-headers=X-Remote-Uid",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
	)
	if err != nil {
		return nil, err
	}
	if err := cp.waitFor(ctx, apiserver, apiserverTimeout, cp.URL+"/readyz", cp.AdminToken); err != nil {
		return nil, err
	}
	fmt.Fprintf(cp.log, "kube: kube-apiserver ready at %s\n", cp.URL)

	if cp.AdminKubeconfig, err = cp.KubeconfigFor(admin); err != nil {
		return nil, err
	}
	kcm, err := cp.run(cfg.BinDir, logDir, "kube-controller-manager",
		"--kubeconfig="+cp.AdminKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=0", // nothing scrapes it, and it would need another port
		"--leader-elect=false",
		"--service-account-private-key-file="+certs.saKey,
		"--root-ca-file="+certs.caCert,
		"--cluster-signing-cert-file="+certs.caCert,
		"--cluster-signing-key-file="+certs.caKey,
		"--controllers=*",
		// Each controller acts as its own ServiceAccount, so RBAC denials
		// look like they do in a real cluster.
		"--use-service-account-credentials=true",
	)
	if err != nil {
		return nil, err
	}
	if err := cp.waitFor(ctx, kcm, controllerTimeout, cp.URL+"/api/v1/namespaces/default/serviceaccounts/default", cp.AdminToken); err != nil {
		return nil, err
	}
	fmt.Fprintf(cp.log, "kube: kube-controller-manager ready (default ServiceAccount exists)\n")

	// Its health port is served with the API server's certificate, so
	// readiness is checked over verified TLS like the rest.
	schedulerURL := "https://127.0.0.1:" + strconv.Itoa(ports[3])
	scheduler, err := cp.run(cfg.BinDir, logDir, "kube-scheduler",
		"--kubeconfig="+cp.AdminKubeconfig,
		"--authentication-kubeconfig="+cp.AdminKubeconfig,
		"--authorization-kubeconfig="+cp.AdminKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports[3]),
		"--tls-cert-file="+certs.servingCert,
		"--tls-private-key-file="+certs.servingKey,
		"--leader-elect=false",
	)
	if err != nil {
		return nil, err
	}
	if err := cp.waitFor(ctx, scheduler, schedulerTimeout, schedulerURL+"/readyz", ""); err != nil {
		return nil, err
	}
	fmt.Fprintf(cp.log, "kube: kube-scheduler ready\n")
	return cp, nil
}

// KubeconfigFor writes Dir/kubeconfig-<name>, authenticating as u with its
// token, and returns the path. u need not be one of Config.Users: a token the
// API server does not know is a way to test authentication failures.
func (cp *ControlPlane) KubeconfigFor(u User) (string, error) {
	if err := u.validate(); err != nil {
		return "", fmt.Errorf("kube: write kubeconfig: %w", err)
	}
	// JSON is valid YAML, and encoding/json escapes what a template would not.
	kc := map[string]any{
		"apiVersion": "v1",
		"kind":       "Config",
		"clusters": []map[string]any{{"name": "tether", "cluster": map[string]string{
			"server": cp.URL, "certificate-authority": cp.CAFile,
		}}},
		"users": []map[string]any{{"name": u.Name, "user": map[string]string{
			"token": u.Token,
		}}},
		"contexts": []map[string]any{{"name": "tether", "context": map[string]string{
			"cluster": "tether", "user": u.Name,
		}}},
		"current-context": "tether",
	}
	b, err := json.MarshalIndent(kc, "", "  ")
	if err != nil {
		return "", fmt.Errorf("kube: encode kubeconfig for %s: %w", u.Name, err)
	}
	path := filepath.Join(cp.dir, "kubeconfig-"+u.Name)
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("kube: write kubeconfig for %s: %w", u.Name, err)
	}
	return path, nil
}

// Exited returns the exit of the first control plane process that has
// died, with the end of its log, or nil while all of them run.
func (cp *ControlPlane) Exited() error {
	for _, p := range cp.procs {
		if p.Exited() {
			return p.ExitError()
		}
	}
	return nil
}

// Stop terminates every process, giving each stopGrace to exit after
// SIGTERM before SIGKILL. It is safe to call more than once.
func (cp *ControlPlane) Stop() error {
	cp.stopOnce.Do(func() {
		var errs []error
		for i := len(cp.procs) - 1; i >= 0; i-- {
			errs = append(errs, cp.procs[i].Stop(stopGrace))
		}
		cp.client.CloseIdleConnections()
		if cp.stopErr = errors.Join(errs...); cp.stopErr != nil {
			cp.stopErr = fmt.Errorf("kube: stop control plane: %w", cp.stopErr)
		}
		if len(cp.procs) > 0 {
			fmt.Fprintf(cp.log, "kube: control plane stopped\n")
		}
	})
	return cp.stopErr
}

func (cp *ControlPlane) run(binDir, logDir, name string, args ...string) (*proc.Process, error) {
	p, err := proc.Start(name, filepath.Join(binDir, name), logDir, nil, args...)
	if err != nil {
		return nil, err
	}
	cp.procs = append(cp.procs, p)
	return p, nil
}

// waitFor polls url until it answers 200 OK, failing early if any process
// started so far exits. p is the process being waited on, whose log the
// timeout error quotes.
func (cp *ControlPlane) waitFor(ctx context.Context, p *proc.Process, timeout time.Duration, url, token string) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last string
	for {
		for _, q := range cp.procs {
			if q.Exited() {
				return &exited{name: q.Name, err: q.ExitError()}
			}
		}
		ok, answer := cp.get(ctx, url, token)
		if ok {
			return nil
		}
		last = answer
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", p.Name, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("%s not ready after %s (GET %s: %s); last lines of %s:\n%s",
				p.Name, timeout, url, last, p.LogPath, proc.Tail(p.LogPath, 30))
		case <-tick.C:
		case <-p.Done():
		}
	}
}

// exited is a process's ExitError, with the process's name for Start's
// retry message.
type exited struct {
	name string
	err  error
}

func (e *exited) Error() string { return e.err.Error() }
func (e *exited) Unwrap() error { return e.err }

// get reports whether url answers 200 OK and, if not, what it answered.
func (cp *ControlPlane) get(ctx context.Context, url, token string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := cp.client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode == http.StatusOK, resp.Status
}
