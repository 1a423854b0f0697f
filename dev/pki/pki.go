// Package pki issues the certificates and keys of the developer stack and of
// tests: a CA, serving and client certificates it signs, and ServiceAccount
// signing keys. Everything is written as PEM files, because that is what the
// binaries that use them read.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/tether-dev/tether/lib/agentcred"
	"github.com/tether-dev/tether/lib/assertion"
)

// org is the Organization of the CA and of serving certificates. Client
// certificates get only the organizations they are given: Kubernetes reads
// them as groups.
const org = "tether-dev"

// Validity of new certificates, and how long a reused CA must still be valid.
const (
	validity   = 365 * 24 * time.Hour
	minCALife  = 30 * 24 * time.Hour
	backdating = time.Hour
)

// CA is a certificate authority whose certificate and key are on disk.
type CA struct {
	CertPath, KeyPath string
	Cert              *x509.Certificate
	Key               crypto.Signer
}

// NewCA writes a fresh ECDSA P-256 CA, with CommonName name, to
// dir/<name>.crt and dir/<name>.key, creating dir if missing.
func NewCA(dir, name string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pki folder: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := template(name, []string{org})
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	ca := &CA{
		CertPath: filepath.Join(dir, name+".crt"),
		KeyPath:  filepath.Join(dir, name+".key"),
		Cert:     cert,
		Key:      key,
	}
	// The Kubernetes controller manager signs CSRs with this key too, so it
	// has to be on disk in a form k8s.io/client-go/util/keyutil reads.
	if err := writeCertAndKey(ca.CertPath, ca.KeyPath, der, key); err != nil {
		return nil, err
	}
	return ca, nil
}

// LoadOrCreateCA loads the CA in dir/<name>.crt and dir/<name>.key if both
// parse, belong together, and the certificate is a CA valid for at least 30
// more days. Otherwise it replaces them with NewCA. Reusing the CA lets
// clients that trust it keep working across restarts.
func LoadOrCreateCA(dir, name string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if ca, err := loadCA(certPath, keyPath); err == nil {
		return ca, nil
	}
	return NewCA(dir, name)
}

func loadCA(certPath, keyPath string) (*CA, error) {
	cert, err := readCert(certPath)
	if err != nil {
		return nil, err
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	switch {
	case !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, errors.New("not a CA certificate")
	case now.Before(cert.NotBefore) || now.Add(minCALife).After(cert.NotAfter):
		return nil, errors.New("CA certificate expires soon")
	}
	// A crash between writing the certificate and the key leaves a pair
	// that does not match; certificates signed with it would not verify.
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("CA key does not match certificate")
	}
	return &CA{CertPath: certPath, KeyPath: keyPath, Cert: cert, Key: key}, nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return x509.ParseCertificate(block.Bytes)
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM key", path)
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
	}
	return nil, fmt.Errorf("%s: unsupported key type %q", path, block.Type)
}

// IssueServer writes dir/<name>.crt and dir/<name>.key: a serving
// certificate with CommonName name for hosts. Hosts that parse as IP
// addresses go to IPAddresses, the rest to DNSNames.
func (ca *CA) IssueServer(dir, name string, hosts []string) (certPath, keyPath string, err error) {
	tmpl := template(name, []string{org})
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(dir, name, tmpl)
}

// IssueService writes dir/<name>.crt and dir/<name>.key: the certificate a
// Tether service uses on internal hops, both to serve and to call (mTLS).
// Its CommonName is the service name, which peers authorize; hosts are
// where it is reached.
func (ca *CA) IssueService(dir, name string, hosts []string) (certPath, keyPath string, err error) {
	tmpl := template(name, []string{org})
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for _, h := range append([]string{name}, hosts...) {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(dir, name, tmpl)
}

// IssueClient writes dir/<name>.crt and dir/<name>.key: a client certificate
// with CommonName cn and Organization orgs, which Kubernetes reads as the
// user name and groups.
func (ca *CA) IssueClient(dir, name, cn string, orgs []string) (certPath, keyPath string, err error) {
	tmpl := template(cn, orgs)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return ca.issue(dir, name, tmpl)
}

func (ca *CA) issue(dir, name string, tmpl *x509.Certificate) (certPath, keyPath string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("create pki folder: %w", err)
	}
	// A certificate cannot usefully outlive its issuer.
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate key for %s: %w", name, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return "", "", fmt.Errorf("sign certificate for %s: %w", name, err)
	}
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := writeCertAndKey(certPath, keyPath, der, key); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// WriteRSAKey writes a new 2048-bit RSA private key (PKCS#1 PEM) to keyPath
// and its public key (PKIX PEM) to pubPath. Kubernetes ServiceAccount tokens
// are RS256 by convention; 2048 bits keeps key generation fast enough to do
// on every start.
func WriteRSAKey(keyPath, pubPath string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate RSA key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("encode RSA public key: %w", err)
	}
	if err := writePEM(keyPath, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key), 0o600); err != nil {
		return err
	}
	return writePEM(pubPath, "PUBLIC KEY", pub, 0o644)
}

func template(cn string, orgs []string) *x509.Certificate {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand never fails on supported platforms.
		panic(err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		// Backdated so a clock that is slightly behind still accepts it.
		NotBefore: now.Add(-backdating),
		NotAfter:  now.Add(validity),
		KeyUsage:  x509.KeyUsageDigitalSignature,
	}
}

func writeCertAndKey(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key %s: %w", keyPath, err)
	}
	if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writePEM(keyPath, "EC PRIVATE KEY", keyDER, 0o600)
}

func writePEM(path, typ string, der []byte, perm os.FileMode) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// IdentityKeys are the files of the identity root (ADR 011): its key pair,
// whose private half stays with whoever certifies gateway keys, and a
// gateway key it certified.
type IdentityKeys struct {
	RootKey, RootPublic, GatewayKey string
}

// WriteIdentityKeys makes, in dir, the identity root and a gateway key it
// certifies for a year, unless they are there already (a restarted stack
// keeps what its agents were installed with).
func WriteIdentityKeys(dir string) (IdentityKeys, error) {
	k := IdentityKeys{
		RootKey: filepath.Join(dir, "identity-root.key"), RootPublic: filepath.Join(dir, "identity-root.pub"),
		GatewayKey: filepath.Join(dir, "gateway-identity.key"),
	}
	if _, err := os.Stat(k.GatewayKey); err == nil {
		return k, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return k, fmt.Errorf("pki: %w", err)
	}
	if err := agentcred.WriteKeyPair(k.RootKey, k.RootPublic); err != nil {
		return k, err
	}
	priv, err := agentcred.ReadPrivateKey(k.RootKey)
	if err != nil {
		return k, err
	}
	root, err := assertion.NewRoot(priv)
	if err != nil {
		return k, err
	}
	return k, assertion.WriteGatewayKey(k.GatewayKey, root, time.Now(), 365*24*time.Hour)
}
