package render

import "testing"

// TestWording: messages speak of JSON values, not the Go types standing in
// for them.
func TestWording(t *testing.T) {
	for in, want := range map[string]string{
		`invalid operation: == (mismatched types map[string]interface {} and string)`: `invalid operation: == (mismatched types object and string)`,
		`expected bool, but got string`:                                               `must return bool, but returns string`,
		`expected bool, but got []interface {}`:                                       `must return bool, but returns array`,
		`expected bool, but got []string`:                                             `must return bool, but returns array`,
		`expected bool, but got interface {}`:                                         `must return bool, but returns any`,
		`expected bool, but got map[string]interface {}`:                              `must return bool, but returns object`,
		`cannot use int as argument (type string) to call lower `:                     `cannot use int as argument (type string) to call lower`,
		`expected bool, but got [][]interface {}`:                                     `must return bool, but returns array`,
	} {
		if got := Wording(in); got != want {
			t.Errorf("Wording(%q)\n = %q\nwant %q", in, got, want)
		}
	}
}
