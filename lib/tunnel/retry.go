package tunnel

import (
	"errors"
	"strconv"
	"time"

	"connectrpc.com/connect"
)

// retryAfterKey carries, in a refusal's metadata, how long the agent
// should wait before it tries again: a subscriber or the registry taking
// a storm of reconnects at the rate it can.
const retryAfterKey = "Retry-After"

// RetryLater is a refusal with code that asks the caller to come back
// after d, rounded up to whole seconds as HTTP's Retry-After is.
func RetryLater(code connect.Code, err error, d time.Duration) *connect.Error {
	ce := connect.NewError(code, err)
	secs := max(1, int((d+time.Second-1)/time.Second))
	ce.Meta().Set(retryAfterKey, strconv.Itoa(secs))
	return ce
}

// RetryAfter is the wait a refusal asked for, if it asked.
func RetryAfter(err error) (time.Duration, bool) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return 0, false
	}
	secs, perr := strconv.Atoi(ce.Meta().Get(retryAfterKey))
	if perr != nil || secs <= 0 {
		return 0, false
	}
	return time.Duration(secs) * time.Second, true
}
