package microsoft_defender

import (
	"fmt"
	"net/url"
	"time"
)

// probeWindow is how far back the probe's request reaches.
const probeWindow = time.Hour

// Probe implements telegraf.ProbePlugin: a token and one minimal request, emitting nothing and keeping the cursor.
// Its error, all that the log says of a failed start-up with startup_error_behavior = "probe", is the step ("token",
// "request" or "answer", which -check reads) and the error, which says what fixes it where that is known.
func (m *MicrosoftDefender) Probe() error {
	if _, err := m.tokens.token(m.ctx); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	now, c := m.now().UTC(), &chunk{}
	var u *url.URL
	switch r := m.reader.(type) {
	case *siemReader:
		u = r.ask(c, &siemAsk{since: now.Add(-probeWindow), until: now, limit: 1}).url
	case *graphReader:
		u = r.ask(c, now.Add(-probeWindow).Truncate(tick), now.Truncate(tick), 1)
	}
	body, err := m.client.get(m.ctx, u)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	defer body.Close()
	// One record is enough, however many the service sends.
	if err := m.reader.decode(c, body, func(record) bool { return false }); err != nil {
		return fmt.Errorf("answer: %w", answerError(m.client.name, u.Host, err))
	}
	return nil
}
