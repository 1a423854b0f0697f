package tunnel

import "sync"

// Chunk buffers are pooled: every hop copies bodies through one, and a
// fresh 64 KiB buffer per request was a tenth of a router's CPU.
var chunks = sync.Pool{New: func() any { b := make([]byte, MaxChunk); return &b }}

// GetChunk returns a MaxChunk-sized buffer; PutChunk gives it back.
func GetChunk() *[]byte { return chunks.Get().(*[]byte) }

// PutChunk returns a buffer from GetChunk.
func PutChunk(b *[]byte) { chunks.Put(b) }
