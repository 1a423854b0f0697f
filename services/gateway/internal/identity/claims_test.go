package identity

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestClaimsMap(t *testing.T) {
	std := Claims{User: "email", Groups: "groups", Tenants: "tenants"}
	many := make([]string, 300)
	for i := range many {
		many[i] = fmt.Sprintf("team-%03d", i)
	}
	manyJSON, _ := json.Marshal(many)
	tests := []struct {
		name    string
		claims  Claims
		payload string
		want    User
		wantErr string
	}{
		{"list claims", std, `{"sub":"u1","email":"a@x","groups":["g1","g2"],"tenants":["acme"]}`,
			User{Name: "a@x", UID: "u1", Groups: []string{"g1", "g2"}, Tenants: []string{"acme"}}, ""},
		{"string claims", std, `{"sub":"u1","email":"a@x","groups":"g1","tenants":"acme"}`,
			User{Name: "a@x", UID: "u1", Groups: []string{"g1"}, Tenants: []string{"acme"}}, ""},
		{"absent groups and tenants", std, `{"sub":"u1","email":"a@x"}`, User{Name: "a@x", UID: "u1"}, ""},
		{"prefixes", Claims{User: "sub", UserPrefix: "oidc:", Groups: "groups", GroupsPrefix: "oidc:", Tenants: "tenants"},
			`{"sub":"u1","groups":["g"]}`, User{Name: "oidc:u1", UID: "u1", Groups: []string{"oidc:g"}}, ""},
		{"300 groups", std, `{"sub":"u","email":"a@x","groups":` + string(manyJSON) + `}`,
			User{Name: "a@x", UID: "u", Groups: many}, ""},
		{"empty entries dropped", std, `{"sub":"u","email":"a@x","groups":["","g"],"tenants":[""]}`,
			User{Name: "a@x", UID: "u", Groups: []string{"g"}}, ""},
		{"verified email", std, `{"sub":"u","email":"a@x","email_verified":true}`, User{Name: "a@x", UID: "u"}, ""},
		{"unverified email", std, `{"sub":"u","email":"a@x","email_verified":false}`, User{}, "email_verified"},
		{"no user claim", std, `{"sub":"u"}`, User{}, `no "email" claim`},
		{"empty user", std, `{"sub":"u","email":""}`, User{}, "empty"},
		{"user not a string", std, `{"sub":"u","email":["a"]}`, User{}, "not a string"},
		{"groups of numbers", std, `{"sub":"u","email":"a@x","groups":[1,2]}`, User{}, "neither"},
		{"system user", Claims{User: "sub", Tenants: "t"}, `{"sub":"system:admin"}`, User{}, "system name"},
		{"system:masters group", std, `{"sub":"u","email":"a@x","groups":["system:masters"]}`, User{}, "system name"},
		{"a break-glass group allowed by name", Claims{User: "email", Groups: "groups", Tenants: "tenants", AllowSystem: []string{"system:masters"}},
			`{"sub":"u","email":"a@x","groups":["system:masters"],"tenants":["acme"]}`, User{Name: "a@x", UID: "u", Groups: []string{"system:masters"}, Tenants: []string{"acme"}}, ""},
		{"another system group than allowed", Claims{User: "email", Groups: "groups", Tenants: "tenants", AllowSystem: []string{"system:masters"}},
			`{"sub":"u","email":"a@x","groups":["system:nodes"]}`, User{}, "system name"},
		{"a system user even so", Claims{User: "sub", Tenants: "t", AllowSystem: []string{"system:admin"}}, `{"sub":"system:admin"}`, User{}, "system name"},
		{"a prefix makes system names harmless", Claims{User: "sub", Groups: "groups", GroupsPrefix: "idp:", Tenants: "t"},
			`{"sub":"u","groups":["system:masters"]}`, User{Name: "u", UID: "u", Groups: []string{"idp:system:masters"}}, ""},
		{"tenant with a dot", std, `{"sub":"u","email":"a@x","tenants":["acme.corp"]}`, User{}, "DNS label"},
		{"tenant wildcard", std, `{"sub":"u","email":"a@x","tenants":["*"]}`, User{}, "DNS label"},
		{"too many groups", std, `{"sub":"u","email":"a@x","groups":` + strings.Repeat(`["g"`+strings.Repeat(`,"g"`, maxGroups)+`]`, 1) + `}`, User{}, "more than"},
		{"long user", std, `{"sub":"u","email":"` + strings.Repeat("a", maxName+1) + `"}`, User{}, "longer"},
		{"not an object", std, `[1]`, User{}, "claims"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.claims.Map([]byte(tt.payload))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Map = %+v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Map =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// FuzzClaimsMap: whatever a token carries, mapping never panics, and what
// it accepts is a user the rest of Tether can carry safely.
func FuzzClaimsMap(f *testing.F) {
	for _, s := range []string{
		`{"sub":"u1","email":"a@x","groups":["g1"],"tenants":["acme"]}`,
		`{"sub":"u","email":"a@x","groups":"g","tenants":"acme","email_verified":true}`,
		`{"sub":"system:admin","email":"system:x","groups":["system:masters"]}`,
		`{"email":null,"groups":null,"tenants":[null,1,"a"]}`,
		`{"email":"\ud800","tenants":["a.b","*",">"," "]}`,
		`{"email":"a","email":"b"}`,
	} {
		f.Add([]byte(s))
	}
	c := Claims{User: "email", Groups: "groups", Tenants: "tenants"}
	f.Fuzz(func(t *testing.T, payload []byte) {
		u, err := c.Map(payload)
		if err != nil {
			return
		}
		if u.Name == "" || strings.HasPrefix(u.Name, "system:") || len(u.Name) > maxName {
			t.Fatalf("accepted user name %q", u.Name)
		}
		for _, g := range u.Groups {
			if g == "" || strings.HasPrefix(g, "system:") {
				t.Fatalf("accepted group %q", g)
			}
		}
		for _, tn := range u.Tenants {
			if !validTenant(tn) {
				t.Fatalf("accepted tenant %q", tn)
			}
		}
	})
}
