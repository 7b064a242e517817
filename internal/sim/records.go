package sim

import (
	"encoding/json"
	"hash/fnv"
	"strings"
)

// Record faults: a share of the detections is served in a form a client
// must survive. Which detections are hit follows from their FullId and the
// seed, so every request and every restarted simulator serves them alike.
//
// A poisoned detection carries one value of the wrong type; the rest of it
// is intact. A giant one carries an unknown field of GiantBytes, to be
// larger than a client's cap on an answer; one with a giant description a
// Description of GiantBytes. One without ids has no FullId, AlertId or
// IocUniqueId.

// poisons are the wrong values a poisoned detection carries, by key.
var poisons = []struct{ key, value string }{
	{"AlertPart", "1e400"},
	{"ReportID", "99999999999999999999"},
	{"Severity", "5"},
	{"AlertTime", `"30/09/2020 14:00"`},
	{"RemediationIsSuccess", `"perhaps"`},
}

// share maps a detection to [0, 1) for the fault of the given name.
func (s *Server) share(fullID, fault string) (float64, uint32) {
	h := fnv.New64a()
	h.Write([]byte(fault))
	h.Write([]byte{byte(s.cfg.Seed), byte(s.cfg.Seed >> 8)})
	h.Write([]byte(fullID))
	sum := h.Sum64()
	return float64(sum>>11) / float64(1<<53), uint32(sum)
}

// IsPoisoned reports whether the detection is served with a wrong value,
// and under which key.
func (s *Server) IsPoisoned(fullID string) (string, bool) {
	x, pick := s.share(fullID, "poison")
	if x >= s.cfg.Faults.PoisonRate {
		return "", false
	}
	return poisons[pick%uint32(len(poisons))].key, true
}

// IsGiant reports whether the detection is served larger than GiantBytes.
func (s *Server) IsGiant(fullID string) bool {
	x, _ := s.share(fullID, "giant")
	return x < s.cfg.Faults.GiantRate
}

// HasGiantDescription reports whether the detection is served with a
// Description of GiantBytes.
func (s *Server) HasGiantDescription(fullID string) bool {
	x, _ := s.share(fullID, "description")
	return x < s.cfg.Faults.GiantDescriptionRate
}

// IsWithoutIDs reports whether the detection is served without FullId,
// AlertId and IocUniqueId.
func (s *Server) IsWithoutIDs(fullID string) bool {
	x, _ := s.share(fullID, "noid")
	return x < s.cfg.Faults.NoIDRate
}

// recordFaults rewrites the encoded detection d for the record faults that
// hit it; it returns encoded unchanged for the others.
func (s *Server) recordFaults(d *Detection, encoded []byte) []byte {
	key, poisoned := s.IsPoisoned(d.FullID)
	giant := s.IsGiant(d.FullID)
	description := s.HasGiantDescription(d.FullID)
	noID := s.IsWithoutIDs(d.FullID)
	if !poisoned && !giant && !description && !noID {
		return encoded
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(encoded, &fields); err != nil {
		return encoded
	}
	if poisoned {
		for _, p := range poisons {
			if p.key == key {
				fields[key] = json.RawMessage(p.value)
			}
		}
	}
	if giant {
		fields["Padding"] = json.RawMessage(`"` + strings.Repeat("x", s.cfg.Faults.GiantBytes) + `"`)
	}
	if description {
		fields["Description"] = json.RawMessage(`"` + strings.Repeat("x", s.cfg.Faults.GiantBytes) + `"`)
	}
	if noID {
		delete(fields, "FullId")
		delete(fields, "AlertId")
		delete(fields, "IocUniqueId")
	}
	out, err := json.Marshal(fields)
	if err != nil {
		return encoded
	}
	return out
}
