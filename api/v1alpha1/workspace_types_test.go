package v1alpha1

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseDefaultAPIs(t *testing.T) {
	got, err := ParseDefaultAPIs(" profile-api:read-only, platform-api:user ")
	if err != nil {
		t.Fatal(err)
	}
	want := []APIGrant{{Name: "profile-api", Permission: "read-only"}, {Name: "platform-api", Permission: "user"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for value, msg := range map[string]string{
		"":                                    "is empty",
		" ":                                   "is empty",
		"profile-api":                         `item 1 "profile-api" is not an api:permission pair`,
		"profile-api:read-only,":              `item 2 "" is not an api:permission pair`,
		"profile-api:read-only:x":             "is not an api:permission pair",
		"Profile:read-only":                   `API name "Profile" is not a DNS subdomain`,
		":read-only":                          `API name "" is not a DNS subdomain`,
		"profile-api:":                        `permission "" of API "profile-api" is not a DNS label`,
		"profile-api:read.only":               "is not a DNS label",
		"profile-api:read-only,profile-api:x": `lists API "profile-api" more than once`,
		strings.Repeat("a", 254) + ":x":       "is not a DNS subdomain",
	} {
		if _, err := ParseDefaultAPIs(value); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseDefaultAPIs(%q) = %v, want an error containing %q", value, err, msg)
		}
	}
	var many []string
	for i := range 33 {
		many = append(many, "api-"+strings.Repeat("x", i%3)+string(rune('a'+i%26))+string(rune('a'+i/26))+":p")
	}
	if _, err := ParseDefaultAPIs(strings.Join(many, ",")); err == nil || !strings.Contains(err.Error(), "more than the 32") {
		t.Errorf("33 APIs: got %v", err)
	}
}
