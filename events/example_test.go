package events_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/events"
)

// verifyTollgate is the README's Go verification snippet, verbatim:
// TestReadmeVerify checks that it accepts what Sign signs, refuses
// tampering, and that the README still shows it.
func verifyTollgate(secret, header string, body []byte) bool {
	var ts, sig string
	for _, p := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || math.Abs(time.Since(time.Unix(sec, 0)).Seconds()) > 300 {
		return false // not signed, or more than 5 minutes off: a replay
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(body)))
	return hmac.Equal([]byte(sig), []byte(hex.EncodeToString(mac.Sum(nil))))
}

func TestReadmeVerify(t *testing.T) {
	body := []byte(`{"id":"evt_1","object":"event","type":"credits.granted"}`)
	h := events.Sign(secret, time.Now(), body)
	if !verifyTollgate(secret, h, body) {
		t.Fatal("the README's snippet refuses a good signature")
	}
	if verifyTollgate(secret, h, append(body, ' ')) || verifyTollgate("other", h, body) {
		t.Fatal("the README's snippet accepts a tampered body or another secret")
	}
	if verifyTollgate(secret, events.Sign(secret, time.Now().Add(-time.Hour), body), body) {
		t.Fatal("the README's snippet accepts an hour-old signature")
	}
	if err := events.Verify(secret, h, body, time.Now(), 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	fn := s[strings.Index(s, "func verifyTollgate"):strings.Index(s, "\nfunc TestReadmeVerify")]
	if !strings.Contains(string(readme), fn) {
		t.Fatalf("README.md does not show verifyTollgate as tested here:\n%s", fn)
	}
}
