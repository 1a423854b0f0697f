package main

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/base64"
	"io"
	"time"
)

// gzipCost times compress/gzip at its default level on data like the big
// list's (256 KiB frames of random base64), in ms of CPU per MB, as a
// reference for the services' CPU per MB: Connect clients ask for gzip and
// Connect handlers compress their messages unless told otherwise.
func gzipCost() (compress, decompress float64) {
	raw := make([]byte, 192<<10)
	_, _ = rand.Read(raw)
	chunk := []byte(base64.StdEncoding.EncodeToString(raw))
	const n = 100
	mb := float64(n*len(chunk)) / 1e6
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	start := time.Now()
	for range n {
		out.Reset()
		w.Reset(&out)
		_, _ = w.Write(chunk)
		_ = w.Close()
	}
	compress = dms(time.Since(start)) / mb
	packed := out.Bytes()
	start = time.Now()
	for range n {
		r, err := gzip.NewReader(bytes.NewReader(packed))
		if err != nil {
			return compress, 0
		}
		_, _ = io.Copy(io.Discard, r)
	}
	return compress, dms(time.Since(start)) / mb
}
