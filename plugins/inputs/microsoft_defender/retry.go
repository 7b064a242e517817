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

// failureClass is what a failed request means for the poll and its
// readers: the one place where errors are classified.
type failureClass int

const (
	// failFinal: the same request would fail the same way.
	failFinal failureClass = iota
	// failTransient: throttling, service errors, lost connections,
	// timeouts and answers cut short, which may go away by themselves.
	failTransient
	// failToken: the API refused the token (401); one more try at once
	// with a new one.
	failToken
	// failUnreadable: the answer came, and what it holds cannot be read
	// (larger than max_body_size, not JSON); asked again, it fails again.
	failUnreadable
	// failRefused: the API will not serve this request (a 4xx other than
	// 401, 403 and 429), such as a next link past its paging depth.
	failRefused
)

// failure is a classified error: its class, and the wait the server asked
// for (Retry-After, zero when it did not), cut to maxRetryAfter (capped
// says so).
type failure struct {
	class  failureClass
	after  time.Duration
	capped error
}

func classify(err error) failure {
	var statusErr *statusError
	var tokenErr *tokenError
	var recordErr *recordSyntaxError
	var netErr net.Error
	var redirectErr *redirectError
	switch {
	case err == nil:
		return failure{class: failFinal}
	case errors.As(err, &redirectErr):
		// The same request would be redirected the same way.
		return failure{class: failFinal}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded) && !isTimeout(err):
		return failure{class: failFinal}
	case errors.Is(err, errBodyTooLarge), errors.As(err, &recordErr):
		return failure{class: failUnreadable}
	case errors.As(err, &statusErr):
		switch s := statusErr.status; {
		case s == http.StatusUnauthorized:
			return failure{class: failToken}
		case isTransientStatus(s):
			return failure{class: failTransient, after: statusErr.retryAfter, capped: statusErr.capped}
		case s >= 400 && s < 500 && s != http.StatusForbidden:
			return failure{class: failRefused}
		}
		return failure{class: failFinal}
	case errors.As(err, &tokenErr):
		if tokenErr.err != nil || isTransientStatus(tokenErr.status) {
			return failure{class: failTransient, after: tokenErr.retryAfter, capped: tokenErr.capped}
		}
		return failure{class: failFinal}
	case errors.Is(err, errTruncated), errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &netErr):
		return failure{class: failTransient}
	}
	return failure{class: failFinal}
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
