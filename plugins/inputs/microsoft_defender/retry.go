package microsoft_defender

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"time"
)

const (
	// Backoff between retries without Retry-After: base, doubled per
	// attempt, capped, with jitter.
	retryBaseDelay = time.Second
	retryMaxDelay  = 30 * time.Second
)

// errTruncated marks an answer that ended before its JSON did.
var errTruncated = errors.New("response truncated")

// retryDecision says whether a failed request is tried again.
type retryDecision struct {
	retry bool
	// after is the wait the server asked for (Retry-After); zero means the
	// backoff decides.
	after time.Duration
	// capped reports a Retry-After cut to maxRetryAfter.
	capped error
	// newToken: the API refused the token (401): try once more at once
	// with a new one.
	newToken bool
}

// classify decides on retrying: throttling, server errors, lost
// connections, timeouts and truncated answers are transient; other 4xx
// answers, invalid credentials and malformed payloads are not, and would
// fail the same way again.
func classify(err error) retryDecision {
	var statusErr *statusError
	var tokenErr *tokenError
	var netErr net.Error
	var redirectErr *redirectError
	switch {
	case errors.As(err, &redirectErr):
		// The same request would be redirected the same way.
		return retryDecision{}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded) && !isTimeout(err):
		return retryDecision{}
	case errors.Is(err, errBodyTooLarge):
		return retryDecision{}
	case errors.As(err, &statusErr):
		switch {
		case statusErr.status == http.StatusUnauthorized:
			return retryDecision{newToken: true}
		case isTransientStatus(statusErr.status):
			return retryDecision{retry: true, after: statusErr.retryAfter, capped: statusErr.capped}
		}
		return retryDecision{}
	case errors.As(err, &tokenErr):
		if tokenErr.err != nil || isTransientStatus(tokenErr.status) {
			return retryDecision{retry: true, after: tokenErr.retryAfter, capped: tokenErr.capped}
		}
		return retryDecision{}
	case errors.Is(err, errTruncated), errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &netErr):
		return retryDecision{retry: true}
	}
	return retryDecision{}
}

// isTransientStatus reports whether an HTTP status may go away by itself:
// throttling and server errors.
func isTransientStatus(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// backoff is the wait before retry number attempt (0-based): doubling from
// retryBaseDelay up to retryMaxDelay, with jitter over its upper half so
// that many pollers do not retry in step.
func backoff(attempt int) time.Duration {
	d := retryMaxDelay
	if attempt < 5 {
		d = min(retryBaseDelay<<attempt, retryMaxDelay)
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1)) //nolint:gosec // jitter, not security
}

// sleepContext waits for d or until ctx ends.
func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
