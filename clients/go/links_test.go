package links

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

type vectors struct {
	Keys []struct {
		ID     uint32 `json:"id"`
		Secret string `json:"secret"`
	} `json:"keys"`
	Valid []struct {
		Name       string `json:"name"`
		KeyID      uint32 `json:"key_id"`
		Host       string `json:"host"`
		Kind       string `json:"kind"`
		Workspace  uint64 `json:"workspace"`
		Message    uint64 `json:"message"`
		Link       uint64 `json:"link"`
		Issued     uint64 `json:"issued"`
		URL        string `json:"url"`
		TrackedURL string `json:"tracked_url"`
	} `json:"valid"`
}

func load(t *testing.T) (vectors, map[uint32][]byte) {
	raw, err := os.ReadFile("../../tests/vectors/tokens.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	keys := map[uint32][]byte{}
	for _, k := range v.Keys {
		keys[k.ID] = []byte(k.Secret)
	}
	return v, keys
}

func TestEveryValidVectorMintsItsToken(t *testing.T) {
	v, keys := load(t)
	if len(v.Valid) < 30 {
		t.Fatalf("%d valid vectors", len(v.Valid))
	}
	for _, c := range v.Valid {
		m, err := NewMinter(c.KeyID, keys[c.KeyID], "https")
		if err != nil {
			t.Fatal(err)
		}
		ids := IDs{Workspace: c.Workspace, Message: c.Message, Link: c.Link, Issued: c.Issued}
		kind := map[string]Kind{"click": Click, "open": Open, "trap": Trap}[c.Kind]
		path := map[Kind]string{Click: "/c/", Trap: "/c/", Open: "/o/"}[kind]
		tok, err := m.Token(c.Host, kind, ids, c.URL)
		if got := "https://" + c.Host + path + tok; err != nil || got != c.TrackedURL {
			t.Errorf("%s: Token: got %q, %v; want %q", c.Name, got, err, c.TrackedURL)
		}
		if c.Issued == 0 {
			continue // Click, Trap and Open take 0 as now
		}
		var got string
		switch kind {
		case Click:
			got, err = m.Click(c.Host, c.URL, ids)
		case Trap:
			got, err = m.Trap(c.Host, c.URL, ids)
		default:
			got, err = m.Open(c.Host, ids)
		}
		if err != nil || got != c.TrackedURL {
			t.Errorf("%s: got %q, %v; want %q", c.Name, got, err, c.TrackedURL)
		}
	}
}

func TestRefusesWhatLinkedgeRefuses(t *testing.T) {
	_, keys := load(t)
	m, _ := NewMinter(1, keys[1], "https")
	ids := IDs{Workspace: 1, Message: 2}
	for _, u := range []string{"javascript:alert(1)", "/relative", "https://e.com/a b", "https:///x", "https://e.com/\xff", "https://e.com/" + strings.Repeat("x", 2048)} {
		if ValidDestination(u) {
			t.Errorf("%q accepted", u)
		}
		if _, err := m.Click("link.example.com", u, ids); err == nil {
			t.Errorf("%q minted", u)
		}
	}
	for _, h := range []string{"Link.example.com", "link.example.com.", "link.example.com:443", "", "[" + strings.Repeat("0:", 130) + "1]"} {
		if _, err := m.Click(h, "https://example.com/", ids); err == nil {
			t.Errorf("host %q minted", h)
		}
	}
	if _, err := NewMinter(1, []byte("short"), "https"); err == nil {
		t.Error("a short secret accepted")
	}
}
