package smoldertrace

import (
	"runtime"
	"testing"
)

func TestDoPublishesAndRestores(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	err := DoHeader(header, func() {
		traceID, spanID, ok := Current()
		if !ok || traceID[0] != 0x4b || spanID[7] != 0xb7 {
			t.Errorf("inside: %x %x %v", traceID, spanID, ok)
		}
		inner := [16]byte{15: 1}
		_ = Do(inner, [8]byte{7: 2}, func() {
			if id, _, _ := Current(); id != inner {
				t.Errorf("nested: %x", id)
			}
		})
		if id, _, _ := Current(); id[0] != 0x4b {
			t.Errorf("not restored: %x", id)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := Current(); ok {
		t.Error("context left after Do")
	}
}

func TestRejectsMalformedValues(t *testing.T) {
	for _, v := range []string{
		"", "1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
		"4bf92f3577b34da6-zz",
	} {
		if err := DoHeader(v, func() { t.Errorf("%q ran", v) }); err == nil {
			t.Errorf("%q accepted", v)
		}
	}
	for _, v := range []string{
		"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
		"64fe8b2a57d3eff7-e457b5a2e4d86bd1",
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
	} {
		ran := false
		if err := DoHeader(v, func() { ran = true }); err != nil || !ran {
			t.Errorf("%q rejected: %v", v, err)
		}
	}
}

func BenchmarkDo(b *testing.B) {
	traceID, spanID := [16]byte{0: 1}, [8]byte{0: 1}
	for i := 0; i < b.N; i++ {
		_ = Do(traceID, spanID, func() {})
	}
}

func BenchmarkSetClearLocked(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	traceID, spanID := [16]byte{0: 1}, [8]byte{0: 1}
	for i := 0; i < b.N; i++ {
		_ = Set(traceID, spanID)
		Clear()
	}
}
