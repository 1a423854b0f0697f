// Package identity tells the gateway who a caller is: a bearer token is
// either a static token from a file, or an OpenID Connect ID token verified
// against its issuer's keys and mapped to a user, groups and tenants.
package identity

import (
	"context"
	"errors"
)

// User is an authenticated caller.
type User struct {
	Name   string
	UID    string
	Groups []string
	// Extra is carried to the cluster as Impersonate-Extra-* headers.
	Extra   map[string][]string
	Tenants []string
}

var (
	// ErrUnknown: the token proves nobody. The caller gets a 401 and
	// nothing more, so tokens cannot be probed.
	ErrUnknown = errors.New("identity: token not recognised")
	// ErrUnavailable: the token could not be checked now (the issuer has not
	// been reached yet). The caller gets a 503 and may retry.
	ErrUnavailable = errors.New("identity: cannot verify tokens now")
)

// Authenticator maps a bearer token to a user.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (User, error)
}

// Chain tries each authenticator in turn: the first that knows the token
// decides. A token none knows is ErrUnknown, unless one of them could not
// check it at all.
type Chain []Authenticator

func (c Chain) Authenticate(ctx context.Context, token string) (User, error) {
	var errs []error
	for _, a := range c {
		u, err := a.Authenticate(ctx, token)
		if err == nil {
			return u, nil
		}
		if errors.Is(err, ErrUnavailable) {
			return User{}, err
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return User{}, ErrUnknown
	}
	return User{}, errors.Join(append([]error{ErrUnknown}, errs...)...)
}
