package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Fault is one way the simulated service misbehaves.
type Fault string

// The faults: each applies to one request.
const (
	FaultThrottle    Fault = "429"       // 429 Too Many Requests with Retry-After
	FaultServerError Fault = "500"       // 500 Internal Server Error, an HTML page
	FaultReset       Fault = "reset"     // part of the body, then a connection reset
	FaultTruncate    Fault = "truncate"  // a Content-Length the body never reaches
	FaultTrickle     Fault = "trickle"   // the body a few bytes at a time, slowly
	FaultOversize    Fault = "oversize"  // every detection padded with a large field
	FaultHang        Fault = "hang"      // no answer until the client gives up
	FaultTokenDown   Fault = "token-503" // the token endpoint answers 503
	FaultNested      Fault = "nested"    // a 200 whose first object holds an unknown member nested 100,000 deep
	FaultSyntax      Fault = "syntax"    // a 200 whose body has a comma doubled halfway
	// FaultNone answers as usual: injected before another fault, it lets
	// that fault hit a later request.
	FaultNone Fault = ""
)

// Faults lists every fault, for flags and documentation.
var Faults = []Fault{FaultThrottle, FaultServerError, FaultReset, FaultTruncate, FaultTrickle, FaultOversize, FaultHang, FaultTokenDown,
	FaultNested, FaultSyntax}

// FaultConfig shapes the faults.
type FaultConfig struct {
	// RetryAfter is what a 429 asks to wait; it is sent in seconds, or as
	// an HTTP date when RetryAfterAsDate is set.
	RetryAfter       time.Duration
	RetryAfterAsDate bool
	// TrickleDelay is the pause between two 16-byte pieces of a trickled body.
	TrickleDelay time.Duration
	// PadBytes is the size of the field added to each detection by FaultOversize.
	PadBytes int
	// Rates injects faults at random: the share of requests each one hits.
	Rates map[Fault]float64

	// PoisonRate is the share of detections served with one value of the
	// wrong type (see records.go).
	PoisonRate float64
	// GiantRate is the share of detections served with an extra field of
	// GiantBytes.
	GiantRate  float64
	GiantBytes int
	// GiantDescriptionRate is the share of detections served with a
	// Description of GiantBytes.
	GiantDescriptionRate float64
	// NoIDRate is the share of detections served without FullId, AlertId
	// and IocUniqueId.
	NoIDRate float64
}

// Inject makes the next n requests of the fault's kind (token requests
// for FaultTokenDown, alerts requests for the others) misbehave.
func (s *Server) Inject(f Fault, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.injected = append(s.injected, f)
	}
}

// ExpireTokens makes every token issued so far expired, as if an hour had
// passed for them.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for token, issued := range s.tokens {
		issued.expiry = time.Time{}
		s.tokens[token] = issued
	}
}

// takeFault returns the fault for this request, if any: an injected one
// first, else one drawn at the configured rates.
func (s *Server) takeFault(token bool) Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.injected {
		if (f == FaultTokenDown) == token {
			s.injected = append(s.injected[:i], s.injected[i+1:]...)
			return f
		}
	}
	for _, f := range Faults {
		if (f == FaultTokenDown) == token && s.faultRNG.Float64() < s.cfg.Faults.Rates[f] {
			return f
		}
	}
	return ""
}

func newFaultRNG(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 0xfa17)) //nolint:gosec // reproducible faults, not security
}

// serveFault answers an alerts request with the fault; body is what a
// healthy answer would have been. It reports false when the fault does
// not concern the body (none).
func (s *Server) serveFault(w http.ResponseWriter, r *http.Request, f Fault, body func() []byte) bool {
	switch f {
	case FaultThrottle:
		if s.cfg.Faults.RetryAfterAsDate {
			w.Header().Set("Retry-After", s.now().Add(s.cfg.Faults.RetryAfter).Format(http.TimeFormat))
		} else {
			w.Header().Set("Retry-After", strconv.Itoa(int(s.cfg.Faults.RetryAfter/time.Second)))
		}
		http.Error(w, `{"error":{"code":"TooManyRequests","message":"Rate limit is exceeded."}}`, http.StatusTooManyRequests)
	case FaultServerError:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, "<html><body><h1>500 - Internal server error.</h1></body></html>")
	case FaultReset:
		b := body()
		writeRaw(w, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(b)), b[:len(b)/2], true)
	case FaultTruncate:
		b := body()
		writeRaw(w, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(b)), b[:len(b)*2/3], false)
	case FaultTrickle:
		w.Header().Set("Content-Type", "application/json")
		b := body()
		flusher, _ := w.(http.Flusher)
		for len(b) > 0 {
			n := min(16, len(b))
			if _, err := w.Write(b[:n]); err != nil {
				return true
			}
			b = b[n:]
			if flusher != nil {
				flusher.Flush()
			}
			select {
			case <-r.Context().Done():
				return true
			case <-time.After(s.cfg.Faults.TrickleDelay):
			}
		}
	case FaultOversize:
		w.Header().Set("Content-Type", "application/json")
		w.Write(padDetections(body(), s.cfg.Faults.PadBytes)) //nolint:errcheck // the client may have gone
	case FaultHang:
		<-r.Context().Done()
	case FaultNested, FaultSyntax:
		w.Header().Set("Content-Type", "application/json")
		w.Write(malformed(body(), f)) //nolint:errcheck // the client may have gone
	default:
		return false
	}
	return true
}

// linger is what *net.TCPConn offers to make its Close a reset.
type linger interface{ SetLinger(sec int) error }

// writeRaw takes over the connection to send a response the HTTP server
// would refuse to: a body shorter than its Content-Length, or one cut by a
// reset.
func writeRaw(w http.ResponseWriter, head string, body []byte, reset bool) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	// Write errors mean the client went away, which is the point here.
	buf.WriteString(head) //nolint:errcheck // see above
	buf.Write(body)       //nolint:errcheck // see above
	buf.Flush()
	// A TCP connection, or an in-memory one of the scenario tests that can
	// play a reset.
	if l, ok := conn.(linger); ok && reset {
		l.SetLinger(0) //nolint:errcheck // without it the close is a clean FIN
	}
}

// nestedDepth is how deep FaultNested nests its member: ten times what
// encoding/json decodes.
const nestedDepth = 100000

// malformed spoils a healthy body: FaultNested adds a member nested
// nestedDepth arrays deep to its first object (an array without one gets
// one), FaultSyntax doubles the first comma of its second half.
func malformed(body []byte, f Fault) []byte {
	if f == FaultSyntax {
		i := bytes.IndexByte(body[len(body)/2:], ',')
		if i < 0 {
			return append(body[:len(body)-1:len(body)-1], ',', ',', body[len(body)-1])
		}
		i += len(body) / 2
		return slices.Concat(body[:i], []byte(","), body[i:])
	}
	nested := `"Nested":` + strings.Repeat("[", nestedDepth) + strings.Repeat("]", nestedDepth)
	i := bytes.IndexByte(body, '{')
	switch {
	case i < 0:
		return []byte("[{" + nested + "}]")
	case body[i+1] == '}':
		return slices.Concat(body[:i+1], []byte(nested), body[i+1:])
	}
	return slices.Concat(body[:i+1], []byte(nested+","), body[i+1:])
}

// padDetections adds a large unknown field to every detection of a
// marshalled array.
func padDetections(body []byte, padBytes int) []byte {
	var detections []json.RawMessage
	if err := json.Unmarshal(body, &detections); err != nil || len(detections) == 0 {
		return body
	}
	pad := `"Padding":"` + strings.Repeat("x", padBytes) + `",`
	var out bytes.Buffer
	out.WriteByte('[')
	for i, d := range detections {
		if i > 0 {
			out.WriteByte(',')
		}
		out.WriteByte('{')
		out.WriteString(pad)
		out.Write(d[1:])
	}
	out.WriteByte(']')
	return out.Bytes()
}
