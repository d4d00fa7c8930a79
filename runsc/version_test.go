package runsc

import "testing"

func TestRunscRelease(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"runsc version release-20231106.0\nspec: 1.1.0\n", 20231106},
		{"runsc version 0.0~20221219.0\nspec: 1.0.2-dev\n", 20221219},
		{"runsc version release-20260905.0\n", 20260905},
		{"runsc version VERSION_MISSING\nspec: 1.2.1\n", 0},
		{"runsc version 1.2.3\n", 0},
		{"", 0},
		{"runsc version release-2026090.0\n", 0},
	} {
		if got := Release(tc.in); got != tc.want {
			t.Errorf("Release(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
