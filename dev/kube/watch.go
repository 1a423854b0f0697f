package kube

import (
	"encoding/json"
	"fmt"
)

// WatchEvent is what tests read of one event of a JSON watch stream.
type WatchEvent struct {
	Type            string
	Name            string
	ResourceVersion string
}

// DecodeWatchEvent reads one line of a JSON watch stream.
func DecodeWatchEvent(line []byte) (WatchEvent, error) {
	var ev struct {
		Type   string `json:"type"`
		Object struct {
			Metadata struct{ Name, ResourceVersion string } `json:"metadata"`
		} `json:"object"`
	}
	if err := json.Unmarshal(line, &ev); err != nil {
		return WatchEvent{}, fmt.Errorf("a broken event %.200q: %w", line, err)
	}
	return WatchEvent{Type: ev.Type, Name: ev.Object.Metadata.Name, ResourceVersion: ev.Object.Metadata.ResourceVersion}, nil
}
