package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
)

// Claims says which ID token claims make a user, as the kube-apiserver's
// --oidc-* flags do, plus the tenants the user belongs to.
type Claims struct {
	// User is the claim naming the user ("sub", "email", ...), with
	// UserPrefix put in front so issuers cannot collide with each other or
	// with the cluster's own users.
	User, UserPrefix string
	// Groups and Tenants are claims holding a string or a list of strings;
	// either may be absent from a token.
	Groups, GroupsPrefix string
	Tenants              string
	// AllowSystem are the Kubernetes system groups ("system:masters") a
	// token may carry, after GroupsPrefix: a platform operator's
	// break-glass group. Any other system: name refuses the token, and a
	// system: user always does. Agents refuse them too unless their
	// cluster allows them (ADR 011).
	AllowSystem []string
}

// Bounds on what one token may claim. A user with hundreds of groups is
// normal in large companies; thousands of tenants is not.
const (
	maxName    = 1024
	maxGroups  = 5000
	maxTenants = 1000
)

// Validate checks the mapping itself.
func (c Claims) Validate() error {
	if c.User == "" {
		return errors.New("identity: the user claim is required")
	}
	if c.Tenants == "" {
		return errors.New("identity: the tenants claim is required: without tenants a user reaches no cluster")
	}
	return nil
}

// Map turns a verified ID token's payload into a user. It refuses a token
// that would make a Kubernetes system identity ("system:" user or groups,
// which could mean system:masters), and anything that does not have the
// shape the claims promise, rather than guess.
func (c Claims) Map(payload []byte) (User, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(payload, &raw); err != nil {
		return User{}, fmt.Errorf("claims: %w", err)
	}
	name, err := stringClaim(raw, c.User)
	if err != nil {
		return User{}, err
	}
	if name == "" {
		return User{}, fmt.Errorf("claims: %q is empty", c.User)
	}
	if c.User == "email" {
		// An unverified address names whoever typed it.
		if v, ok := raw["email_verified"]; ok {
			var verified bool
			if json.Unmarshal(v, &verified) != nil || !verified {
				return User{}, errors.New("claims: email_verified is not true")
			}
		}
	}
	u := User{Name: c.UserPrefix + name}
	if sub, err := stringClaim(raw, "sub"); err == nil {
		u.UID = sub
	}
	if c.Groups != "" {
		groups, err := listClaim(raw, c.Groups, maxGroups)
		if err != nil {
			return User{}, err
		}
		for _, g := range groups {
			u.Groups = append(u.Groups, c.GroupsPrefix+g)
		}
	}
	if u.Tenants, err = listClaim(raw, c.Tenants, maxTenants); err != nil {
		return User{}, err
	}
	for _, t := range u.Tenants {
		if !validTenant(t) {
			return User{}, fmt.Errorf("claims: tenant %q is not a DNS label", t)
		}
	}
	if err := checkName(u.Name); err != nil {
		return User{}, fmt.Errorf("claims: user: %w", err)
	}
	for _, g := range u.Groups {
		if slices.Contains(c.AllowSystem, g) {
			continue
		}
		if err := checkName(g); err != nil {
			return User{}, fmt.Errorf("claims: group: %w", err)
		}
	}
	return u, nil
}

func stringClaim(raw map[string]json.RawMessage, name string) (string, error) {
	v, ok := raw[name]
	if !ok {
		return "", fmt.Errorf("claims: no %q claim", name)
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("claims: %q is not a string", name)
	}
	return s, nil
}

// listClaim reads a string or a list of strings; an absent claim is an
// empty list.
func listClaim(raw map[string]json.RawMessage, name string, limit int) ([]string, error) {
	v, ok := raw[name]
	if !ok || string(v) == "null" {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(v, &list); err != nil {
		var one string
		if json.Unmarshal(v, &one) != nil {
			return nil, fmt.Errorf("claims: %q is neither a string nor a list of strings", name)
		}
		list = []string{one}
	}
	if len(list) > limit {
		return nil, fmt.Errorf("claims: %q has %d entries, more than %d", name, len(list), limit)
	}
	var out []string
	for _, s := range list {
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

func checkName(s string) error {
	switch {
	case len(s) > maxName:
		return fmt.Errorf("longer than %d bytes", maxName)
	case !utf8.ValidString(s):
		return errors.New("not UTF-8")
	case strings.HasPrefix(s, "system:"):
		return fmt.Errorf("%q is a Kubernetes system name", s)
	}
	return nil
}

// validTenant: tenants are DNS labels, as cluster ids are, so they can
// appear in subjects and names without escaping.
func validTenant(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// decodeLimited decodes at most 1 MiB of JSON: a key set is a few KiB.
func decodeLimited(r io.Reader, v any) error {
	return json.NewDecoder(io.LimitReader(r, 1<<20)).Decode(v)
}
