package microsoft_defender

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
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
		body := &limitedBody{body: io.NopCloser(iotest.OneByteReader(bytes.NewReader(data))), remaining: fuzzBodyLimit}
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
		require.Equal(t, want, got)
		if err != nil && !strings.HasPrefix(err.Error(), "detection ") && !strings.HasPrefix(err.Error(), "after ") &&
			!strings.HasPrefix(err.Error(), "response is not a JSON array") {
			t.Fatalf("an error that does not say where: %v", err)
		}
		for i := range got {
			if m, _ := alertMetric(&got[i]); m.Name() != measurementAlert {
				t.Fatalf("unexpected measurement %q", m.Name())
			}
		}
	})
}

// decodeWithEncodingJSON decodes an answer with encoding/json, the reference
// the detection decoder is held to: it stops at the first detection that
// does not decode or validate, and rejects anything after the array.
func decodeWithEncodingJSON(data []byte) ([]detection, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return nil, fmt.Errorf("not an array: %v %w", tok, err)
	}
	var out []detection
	for dec.More() {
		var d detection
		if err := dec.Decode(&d); err != nil {
			return out, err
		}
		if err := d.validate(); err != nil {
			return out, err
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

// FuzzTokenResponse feeds arbitrary token endpoint answers, with any
// status, to the token source: it must never panic, and its errors must
// never hold the client secret or the refresh token, whatever the answer
// echoes.
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

	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 599 {
			return
		}
		source := &aadToken{
			client: &http.Client{Transport: cannedResponse{status: status, body: body}},
			// A fixed, valid URL: the fuzzer varies the answer, not the request.
			tokenURL:     "https://login.example.com/tenant/oauth2/token",
			clientID:     testClientID,
			clientSecret: secretOf(testClientSecret),
			refreshToken: secretOf(testRefreshToken),
			resource:     defaultSIEMResource,
			now:          time.Now,
		}
		tok, err := source.fetch(context.Background())
		if err != nil {
			for _, secret := range []string{testClientSecret, testRefreshToken} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("the error repeats a secret: %v", err)
				}
			}
			return
		}
		if tok.AccessToken == "" {
			t.Fatal("a token accepted without an access token")
		}
	})
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

	f.Fuzz(func(t *testing.T, data []byte) {
		var want []graphAlert
		wantNext, wantErr := decodeGraphPageWithEncodingJSON(data, func(a *graphAlert) { want = append(want, *a) })
		var got []graphAlert
		next, err := decodeGraphPage(iotest.OneByteReader(bytes.NewReader(data)), func(a *graphAlert) bool {
			got = append(got, *a)
			return true
		})
		if (err == nil) != (wantErr == nil) || len(got) != len(want) {
			t.Fatalf("encoding/json decoded %d alerts, then %v; the decoder %d, then %v", len(want), wantErr, len(got), err)
		}
		if err == nil {
			require.Equal(t, wantNext, next)
		}
		for i := range got {
			var compact bytes.Buffer
			if len(want[i].Evidence) > 0 {
				require.NoError(t, json.Compact(&compact, want[i].Evidence))
				want[i].Evidence = compact.Bytes()
			}
		}
		require.Equal(t, want, got)

		// A handler that stops at the first alert ends the page there.
		if len(want) > 0 {
			var first []graphAlert
			next, err := decodeGraphPage(bytes.NewReader(data), func(a *graphAlert) bool {
				first = append(first, *a)
				return false
			})
			require.NoError(t, err)
			require.Equal(t, graphPageMeta{}, next)
			require.Equal(t, want[:1], first)
		}
	})
}

// decodeGraphPageWithEncodingJSON decodes a page with encoding/json, the
// reference for decodeGraphPage.
func decodeGraphPageWithEncodingJSON(data []byte, handle func(*graphAlert)) (graphPageMeta, error) {
	var meta graphPageMeta
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return meta, fmt.Errorf("not an object: %v %w", tok, err)
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return meta, err
		}
		switch key {
		case "value":
			if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
				return meta, fmt.Errorf("value: %v %w", tok, err)
			}
			for dec.More() {
				var a graphAlert
				if err := dec.Decode(&a); err != nil {
					return meta, err
				}
				if err := validateWithEncodingJSON(&a); err != nil {
					return meta, err
				}
				handle(&a)
			}
			if _, err := dec.Token(); err != nil {
				return meta, err
			}
		case "@odata.nextLink":
			if err := dec.Decode(&meta.next); err != nil {
				return meta, err
			}
		case "@odata.count":
			// Anything but a non-negative integer is no count.
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return meta, err
			}
			if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil && n >= 0 {
				meta.count, meta.hasCount = n, true
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return meta, err
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return meta, err
	}
	if tok, err := dec.Token(); !errors.Is(err, io.EOF) {
		return meta, fmt.Errorf("after the object: %v %w", tok, err)
	}
	return meta, nil
}

// validateWithEncodingJSON is graphAlert.validate with its evidence decoded
// by encoding/json.
func validateWithEncodingJSON(a *graphAlert) error {
	evidence := a.Evidence
	a.Evidence = nil
	err := a.validate()
	a.Evidence = evidence
	if err != nil || len(evidence) == 0 || string(evidence) == "null" {
		return err
	}
	var all []deviceEvidence
	if err := json.Unmarshal(evidence, &all); err != nil {
		return err
	}
	a.evidenceCount = len(all)
	for _, e := range all {
		if e.Type == "#microsoft.graph.security.deviceEvidence" {
			a.device = e
			break
		}
	}
	return nil
}
