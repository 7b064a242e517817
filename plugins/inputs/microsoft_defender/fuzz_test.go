package microsoft_defender

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/influxdata/telegraf/config"
)

// fuzzBodyLimit bounds what one fuzzed answer may hold, as max_body_size
// does in production, so that no input makes the decoder allocate without
// bound.
const fuzzBodyLimit = 1 << 20

// FuzzDecodeDetections feeds arbitrary answers, one byte per read, to the
// detection decoder and the metric mapping. Detection by detection, the
// decoder must decode what encoding/json decodes into the same struct and
// fail where it fails; its errors must say where; it must never panic; and
// every detection it accepts must become a metric.
func FuzzDecodeDetections(f *testing.F) {
	for _, name := range fixtureFiles(f) {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		if strings.HasSuffix(name, "detection.json") {
			f.Add(append(append([]byte("["), data...), ']'))
		}
	}
	f.Add([]byte(`[{"AlertPart":"1","ReportID":null,"RemediationIsSuccess":"true","LastProcessedTimeUtc":"2020-01-01 00:00:00"}]`))
	f.Add([]byte(`[{"LastProcessedTimeUtc":"2020-01-01T00:00:00Z","Junk":[[[[{}]]]]},1,"x",null]`))
	f.Add([]byte(`[{"lastprocessedtimeutc":"2020-01-01T00:00:00Z","FULLID":"a","FullId":null,"Alertpart":2,"alertPart":null}] `))
	f.Add([]byte(`[{"LastProcessedTimeUtc":"2020-01-01T00:00:00Z","Sha1":"\u00e9\ud83d\ude00\ud800","Title":5}]x`))

	f.Fuzz(func(t *testing.T, data []byte) {
		want, wantErr := decodeWithEncodingJSON(data)
		body := limitedBody{http.MaxBytesReader(nil, io.NopCloser(iotest.OneByteReader(bytes.NewReader(data))), fuzzBodyLimit)}
		var got []detection
		dec, err := newDetectionDecoder(body)
		for err == nil {
			var d detection
			if err = dec.next(&d); err == nil {
				got = append(got, d)
			}
		}
		if errors.Is(err, io.EOF) {
			err = nil
		}
		if (err == nil) != (wantErr == nil) || len(got) != len(want) {
			t.Fatalf("encoding/json decoded %d detections, then %v; the decoder %d, then %v", len(want), wantErr, len(got), err)
		}
		problemsOf := func(d *detection) *recordProblems { return &d.issues }
		require.Equal(t, comparableProblems(want, problemsOf), comparableProblems(got, problemsOf))
		require.Equal(t, want, got)
		if err != nil && !strings.HasPrefix(err.Error(), "detection ") && !strings.HasPrefix(err.Error(), "after ") &&
			!strings.HasPrefix(err.Error(), "response is not a JSON array") {
			t.Fatalf("an error that does not say where: %v", err)
		}
		for i := range got {
			if m, _ := got[i].metric(); m.Name() != measurementAlert {
				t.Fatalf("unexpected measurement %q", m.Name())
			}
		}
	})
}

// decodeWithEncodingJSON decodes an answer with encoding/json, the reference
// the detection decoder is held to: it stops at malformed JSON, decodes each
// detection member by member, leaving out the members that do not fit, and
// rejects anything after the array.
func decodeWithEncodingJSON(data []byte) ([]detection, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return nil, fmt.Errorf("not an array: %v %w", tok, err)
	}
	var out []detection
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return out, err
		}
		var d detection
		if invalid, notObject := membersWithEncodingJSON(raw, &d, func(d detection) detection { return d }, nil); notObject {
			d.issues.skip = "not an object"
		} else {
			d.validate()
			d.issues.invalid = append(make([]fieldProblem, invalid), d.issues.invalid...)
		}
		out = append(out, d)
	}
	if _, err := dec.Token(); err != nil {
		return out, err
	}
	if tok, err := dec.Token(); !errors.Is(err, io.EOF) {
		return out, fmt.Errorf("after the array: %v %w", tok, err)
	}
	return out, nil
}

// membersWithEncodingJSON decodes raw, one element of an item array, into v
// as recordReader.record promises to: member by member with encoding/json,
// a member that does not decode leaving v as it was. It returns how many members were
// left out, and whether raw is no object (null is an empty one). clone
// deep-copies a T, so that a failed member cannot change what it restores.
func membersWithEncodingJSON[T any](raw []byte, v *T, clone func(T) T,
	special func(v *T, key string, value json.RawMessage) (handled, ok bool),
) (invalid int, notObject bool) {
	switch raw[0] {
	case 'n':
		return 0, false
	case '{':
	default:
		return 0, true
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.Token() //nolint:errcheck // raw is a whole object
	for dec.More() {
		key, _ := dec.Token() //nolint:errcheck // as above
		var value json.RawMessage
		dec.Decode(&value) //nolint:errcheck // as above
		if special != nil {
			if handled, ok := special(v, key.(string), value); handled {
				if !ok {
					invalid++
				}
				continue
			}
		}
		// The value as it came: json.Marshal would escape HTML in it.
		var member bytes.Buffer
		member.WriteByte('{')
		enc := json.NewEncoder(&member)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(key.(string)); err != nil {
			panic(err)
		}
		member.WriteByte(':')
		member.Write(value)
		member.WriteByte('}')
		before := clone(*v)
		if err := json.Unmarshal(member.Bytes(), v); err != nil {
			*v = before
			invalid++
		}
	}
	return invalid, false
}

// comparableProblems reduces the problems of decoded items to what the
// reference decoders can know: how many fields were left out and whether
// the item was skipped, not where or why.
func comparableProblems[T any](items []T, problems func(*T) *recordProblems) []string {
	out := make([]string, len(items))
	for i := range items {
		p := problems(&items[i])
		out[i] = fmt.Sprintf("invalid=%d skipped=%t", len(p.invalid), p.skip != "")
		*p = recordProblems{}
	}
	return out
}

// FuzzTokenResponse feeds arbitrary token endpoint answers, with any
// status, to the token source: it must never panic, its errors must never
// hold the client secret or the refresh token, whatever the answer echoes,
// and a token it accepts can be sent in a header.
func FuzzTokenResponse(f *testing.F) {
	seed, err := os.ReadFile(filepath.Join("testdata", "token_response_v1_seed.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(200, seed)
	f.Add(200, []byte(`{"token_type":"Bearer","expires_in":3599,"access_token":"x"}`))
	f.Add(401, []byte(`{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1"}`))
	f.Add(400, []byte(`{"error":"invalid_grant","error_description":"AADSTS70000: `+testRefreshToken+`"}`))
	f.Add(502, []byte("<html>client_secret="+testClientSecret+"</html>"))
	// Found by the fuzzer: bytes that are not UTF-8 inside an echoed secret
	// escaped redaction, and dropping them afterwards joined the secret.
	f.Add(502, []byte("<html>client_secret="+testClientSecret[:9]+"\x95\xb4"+testClientSecret[9:]+"</html>"))
	f.Add(400, []byte(`{"error":"`+testClientSecret+`"}`))
	f.Add(200, []byte(`{"access_token":"x","expires_in":"soon"}`))
	f.Add(200, []byte(`{"access_token":"x\r\nX-Injected: 1"}`))
	f.Add(502, []byte(`<p>S3c<b>r3t</b>-Value~with&#47;special\u002bchars&#x3D;</p>`))

	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 599 {
			return
		}
		tok, err := cannedTokenSource(status, body).token(context.Background())
		if err != nil {
			for _, secret := range []string{testClientSecret, testRefreshToken} {
				if strings.Contains(err.Error(), secret) || strings.Contains(unescapeAll(err.Error()), secret) {
					t.Fatalf("the error repeats a secret: %v", err)
				}
			}
			return
		}
		if err := checkBearerToken(tok); err != nil {
			t.Fatalf("a token accepted that cannot be sent: %v", err)
		}
	})
}

// cannedTokenSource is a refresh token grant whose token endpoint answers
// status and body.
func cannedTokenSource(status int, body []byte) tokenSource {
	m := &MicrosoftDefender{AuthMethod: methodRefreshToken, ClientID: testClientID, ClientSecret: *secretOf(testClientSecret),
		RefreshToken: *secretOf(testRefreshToken), Scopes: []string{defaultSIEMResource + "/.default"}, now: time.Now}
	// A fixed, valid URL: the fuzzer varies the answer, not the request.
	login := &url.URL{Scheme: "https", Host: "login.example.com"}
	return m.signIn(&http.Client{Transport: cannedResponse{status: status, body: body}}, login, m.refreshGrant(login.String()+"/tenant/oauth2/token"))
}

func secretOf(value string) *config.Secret {
	s := config.NewSecret([]byte(value))
	return &s
}

// cannedResponse answers every request with one status and body.
type cannedResponse struct {
	status int
	body   []byte
}

func (c cannedResponse) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode: c.status,
		Status:     http.StatusText(c.status),
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(bytes.NewReader(c.body)),
		Request:    req,
	}, nil
}

func fixtureFiles(f *testing.F) []string {
	var names []string
	for _, pattern := range []string{"testcases/*/response.json", "testcases/*/detection*.json"} {
		matches, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		names = append(names, matches...)
	}
	return names
}

// FuzzDecodeGraphPage holds the Graph page decoder to encoding/json as
// FuzzDecodeDetections does the SIEM one: the same alerts, evidence count,
// device evidence and next link, and a failure where encoding/json fails.
func FuzzDecodeGraphPage(f *testing.F) {
	matches, err := filepath.Glob("testcases/graph_*/response*.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range matches {
		if strings.Contains(name, "incidents") {
			continue // pages of incidents, which FuzzDecodeGraphPage does not read
		}
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"value":[{"ID":"a","lastUpdateDateTime":"2026-01-01T00:00:00Z","mitreTechniques":["T1",null],` +
		`"mitreTechniques":[null,"T2"],"evidence":[null,{"@odata.type":"#microsoft.graph.security.deviceEvidence","RbacGroupName":"g"}]}],` +
		`"@odata.nextLink":null,"@odata.context":{"x":[1]}}`))
	f.Add([]byte(`{"value":[{"id":"a","lastUpdateDateTime":"2026-01-01T00:00:00Z","evidence":[1]}]}`))
	f.Add([]byte(`{"value":{},"@odata.nextLink":5}`))
	f.Add([]byte(`{"value":[{"id":"a","evidence":[{"@odata.type":"#microsoft.graph.security.processEvidence","deviceDnsName":"x"}]}]}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		var want []graphAlert
		wantNext, wantErr := decodeGraphPageWithEncodingJSON(data, func(a *graphAlert) { want = append(want, *a) })
		var got []graphAlert
		next, err := decodeGraphPage(iotest.OneByteReader(bytes.NewReader(data)), evidenceNeeds{raw: true}, func(a *graphAlert) bool {
			got = append(got, *a)
			return true
		})
		if (err == nil) != (wantErr == nil) || len(got) != len(want) {
			t.Fatalf("encoding/json decoded %d alerts, then %v; the decoder %d, then %v", len(want), wantErr, len(got), err)
		}
		if err == nil {
			require.Equal(t, wantNext, next)
		}
		problemsOf := func(a *graphAlert) *recordProblems { return &a.issues }
		require.Equal(t, comparableProblems(want, problemsOf), comparableProblems(got, problemsOf))
		require.Equal(t, want, got)

		// A handler that stops at the first alert ends the page there.
		if len(want) > 0 {
			var first []graphAlert
			next, err := decodeGraphPage(bytes.NewReader(data), evidenceNeeds{raw: true}, func(a *graphAlert) bool {
				first = append(first, *a)
				return false
			})
			require.NoError(t, err)
			require.Empty(t, next)
			comparableProblems(first, problemsOf)
			require.Equal(t, want[:1], first)
		}
	})
}

// decodeGraphPageWithEncodingJSON decodes a page with encoding/json, the
// reference for decodeGraphPage.
func decodeGraphPageWithEncodingJSON(data []byte, handle func(*graphAlert)) (string, error) {
	var next string
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return next, fmt.Errorf("not an object: %v %w", tok, err)
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return next, err
		}
		switch key {
		case "value":
			if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
				return next, fmt.Errorf("value: %v %w", tok, err)
			}
			for dec.More() {
				var raw json.RawMessage
				if err := dec.Decode(&raw); err != nil {
					return next, err
				}
				var a graphAlert
				if invalid, notObject := membersWithEncodingJSON(raw, &a, cloneGraphAlert, evidenceWithEncodingJSON); notObject {
					a.issues.skip = "not an object"
				} else {
					validateWithEncodingJSON(&a)
					a.issues.invalid = append(make([]fieldProblem, invalid), a.issues.invalid...)
				}
				handle(&a)
			}
			if _, err := dec.Token(); err != nil {
				return next, err
			}
		case "@odata.nextLink":
			if err := dec.Decode(&next); err != nil {
				return next, err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return next, err
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return next, err
	}
	if tok, err := dec.Token(); !errors.Is(err, io.EOF) {
		return next, fmt.Errorf("after the object: %v %w", tok, err)
	}
	return next, nil
}

// validateWithEncodingJSON is graphAlert.validate, the evidence being
// read member by member (evidenceWithEncodingJSON).
func validateWithEncodingJSON(a *graphAlert) {
	a.validate()
}

// evidenceWithEncodingJSON is recordReader.unmarshalEvidence with
// encoding/json: null keeps what was there, evidence that does not decode
// too, and the array is kept while short enough to be emitted.
func evidenceWithEncodingJSON(a *graphAlert, key string, value json.RawMessage) (handled, ok bool) {
	if !strings.EqualFold(key, "evidence") {
		return false, true
	}
	if string(value) == "null" {
		return true, true
	}
	// Entries after the first device evidence are counted, not decoded.
	var all []json.RawMessage
	if err := json.Unmarshal(value, &all); err != nil {
		return true, false
	}
	var device deviceEvidence
	for _, raw := range all {
		var e deviceEvidence
		if err := json.Unmarshal(raw, &e); err != nil || raw[0] != '{' && raw[0] != 'n' {
			return true, false
		}
		if e.Type == "#microsoft.graph.security.deviceEvidence" {
			device = e
			break
		}
	}
	// Kept entry by entry, as each came, without what lay between them.
	kept := []byte{'['}
	for i, raw := range all {
		if i > 0 {
			kept = append(kept, ',')
		}
		kept = append(kept, raw...)
	}
	kept = append(kept, ']')
	a.Evidence = alertEvidence{raw: kept, device: device, count: len(all), leftOut: len(kept) > maxEvidenceBytes}
	if a.Evidence.leftOut {
		a.Evidence.raw = nil
	}
	return true, true
}

func cloneGraphAlert(a graphAlert) graphAlert { //nolint:gocritic // a value, as membersWithEncodingJSON's clone takes
	if a.MitreTechniques != nil {
		a.MitreTechniques = append(make([]string, 0, len(a.MitreTechniques)), a.MitreTechniques...)
	}
	if a.Evidence.raw != nil {
		a.Evidence.raw = append(make(json.RawMessage, 0, len(a.Evidence.raw)), a.Evidence.raw...)
	}
	return a
}

const testProxyPassword = "Pr0xy~Pass/word+1="

// FuzzEscapedSecrets answers the token request and an API request with
// bodies that echo a secret (client secret, refresh token, access token or
// proxy password) character by character raw, JSON- or C-escaped, as an
// HTML entity (decimal, hexadecimal, named, doubly encoded),
// percent-encoded, or after markup, in any mixture, inside an OAuth error,
// another JSON body, an HTML page or plain text. The token source's
// message holds none of the secrets in any of those forms, nor after
// unescapeAll: it quotes nothing of the answer. The API client's holds the
// bearer token it sent in neither its exact nor its URL-escaped forms.
func FuzzEscapedSecrets(f *testing.F) {
	f.Add(502, uint8(0), uint8(2), []byte{0, 1, 3, 7, 4, 9, 6, 10, 11, 12}, "client_secret=", "&x=1")
	f.Add(400, uint8(1), uint8(0), []byte{1}, "AADSTS70000: ", "")
	f.Add(500, uint8(2), uint8(1), []byte{3, 4, 0, 0, 8}, "Bearer ", "\r\n")
	f.Add(407, uint8(3), uint8(3), []byte{6, 6, 2}, "proxyuser:", "@")
	f.Add(401, uint8(0), uint8(2), []byte(nil), "<a title=\"", "\">")

	f.Fuzz(func(t *testing.T, status int, which, container uint8, mix []byte, prefix, suffix string) {
		if status < 100 || status > 599 {
			return
		}
		all := []string{testClientSecret, testRefreshToken, testAccessToken, testProxyPassword}
		secret := all[int(which)%len(all)]
		echo := prefix + mixEncode(secret, mix) + suffix
		var body string
		switch container % 4 {
		case 0:
			body = `{"error":"invalid_client","error_description":"` + echo + `"}`
		case 1:
			body = `{"message":"` + echo + `"}`
		case 2:
			body = "<html><body><pre>" + echo + "</pre></body></html>"
		default:
			body = echo
		}
		check := func(msg string, secrets ...string) {
			for _, s := range secrets {
				for _, form := range []string{s, url.QueryEscape(s), url.PathEscape(s), mixEncode(s, mix)} {
					if strings.Contains(msg, form) {
						t.Fatalf("the message holds %q: %s", form, msg)
					}
				}
				if strings.Contains(unescapeAll(msg), s) {
					t.Fatalf("the message, unescaped, holds %q: %s", s, msg)
				}
			}
		}

		if _, err := cannedTokenSource(status, []byte(body)).token(context.Background()); err != nil {
			check(err.Error(), all...)
		}

		if status/100 == 2 {
			status = http.StatusInternalServerError
		}
		api := &apiClient{
			name:          "SIEM API",
			client:        &http.Client{Transport: cannedResponse{status: status, body: []byte(body)}},
			tokens:        knownSecrets{all[:3]},
			maxBodySize:   fuzzBodyLimit,
			statusMeaning: commonStatusMeaning,
			now:           time.Now,
		}
		u, _ := url.Parse("https://api.example.com/api/alerts") //nolint:errcheck // a constant URL
		_, err := api.get(context.Background(), u)
		require.Error(t, err)
		for _, form := range []string{testAccessToken, url.QueryEscape(testAccessToken), url.PathEscape(testAccessToken)} {
			require.NotContains(t, err.Error(), form)
		}
	})
}

// mixEncode writes s one character at a time in the form mix picks for it.
func mixEncode(s string, mix []byte) string {
	named := map[byte]string{'/': "&sol;", '+': "&plus;", '=': "&equals;", '.': "&period;", '_': "&lowbar;", '!': "&excl;"}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		form := byte(0)
		if len(mix) > 0 {
			form = mix[i%len(mix)] % 13
		}
		switch form {
		case 0:
			b.WriteByte(c)
		case 1:
			fmt.Fprintf(&b, `\u%04x`, c)
		case 2:
			fmt.Fprintf(&b, `\u%04X`, c)
		case 3:
			fmt.Fprintf(&b, "&#%d;", c)
		case 4:
			fmt.Fprintf(&b, "&#x%x;", c)
		case 5:
			fmt.Fprintf(&b, "&#X%02X;", c)
		case 6:
			if name, ok := named[c]; ok {
				b.WriteString(name)
			} else {
				fmt.Fprintf(&b, "&#%03d;", c)
			}
		case 7:
			fmt.Fprintf(&b, "<b>%c", c)
		case 8:
			fmt.Fprintf(&b, `</span class="x"><i>%c`, c)
		case 9:
			fmt.Fprintf(&b, "<!-- a<b>c -->%c", c)
		case 10:
			fmt.Fprintf(&b, "%%%02X", c)
		case 11:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			fmt.Fprintf(&b, "&amp;#%d;", c)
		}
	}
	return b.String()
}

// knownSecrets is a token source that knows the given secrets and hands
// out the last as its token.
type knownSecrets struct {
	values []string
}

func (k knownSecrets) token(context.Context) (string, error) { return k.values[len(k.values)-1], nil }
func (knownSecrets) invalidate(string)                       {}
