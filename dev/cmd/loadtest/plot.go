package main

import (
	"fmt"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/tether-dev/tether/loadtest/driver"
)

// plotLoad draws a load run second by second: requests offered, answered
// and failed, and the p50 and p99 latency of what was sent in each
// second, one above the other, into a PNG at path.
func plotLoad(path, title string, tl []driver.Second) error {
	rate, lat := plot.New(), plot.New()
	rate.Title.Text = title + ": requests per second"
	rate.X.Label.Text, rate.Y.Label.Text = "seconds", "requests/s"
	lat.Title.Text = title + ": latency of the requests sent in each second"
	lat.X.Label.Text, lat.Y.Label.Text = "seconds", "ms"
	offered, ok, failed := make(plotter.XYs, len(tl)), make(plotter.XYs, len(tl)), make(plotter.XYs, len(tl))
	p50, p99 := make(plotter.XYs, len(tl)), make(plotter.XYs, len(tl))
	for i, s := range tl {
		x := float64(i)
		offered[i], ok[i], failed[i] = plotter.XY{X: x, Y: s.Offered}, plotter.XY{X: x, Y: float64(s.OK)}, plotter.XY{X: x, Y: float64(s.Fail)}
		p50[i], p99[i] = plotter.XY{X: x, Y: float64(s.P50) / 1e6}, plotter.XY{X: x, Y: float64(s.P99) / 1e6}
	}
	if err := plotutil.AddLines(rate, "offered", offered, "answered 2xx", ok, "failed", failed); err != nil {
		return err
	}
	if err := plotutil.AddLines(lat, "p50", p50, "p99", p99); err != nil {
		return err
	}
	return writePlots(path, [][]*plot.Plot{{rate}, {lat}})
}

// writePlots stacks rows of plots into one PNG at path.
func writePlots(path string, rows [][]*plot.Plot) error {
	const w, h = 9 * vg.Inch, 7 * vg.Inch
	img := vgimg.New(w, h)
	tiles := draw.Tiles{Rows: len(rows), Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(12), PadY: vg.Points(18)}
	canvases := plot.Align(rows, tiles, draw.New(img))
	for r := range rows {
		rows[r][0].Draw(canvases[r][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}

// plotProcesses draws every Tether process's RSS and goroutines over a
// run, one panel above the other, into a PNG at path.
func plotProcesses(path string, names []string, tl []snapshot) error {
	mem, gor := plot.New(), plot.New()
	mem.Title.Text, mem.X.Label.Text, mem.Y.Label.Text = "RSS by process", "seconds", "MiB"
	gor.Title.Text, gor.X.Label.Text, gor.Y.Label.Text = "goroutines by process", "seconds", "goroutines"
	var memLines, gorLines []any
	for _, name := range names {
		rss, gs := plotter.XYs{}, plotter.XYs{}
		for _, s := range tl {
			p, ok := s.procs[name]
			if !ok || len(tl) == 0 {
				continue
			}
			x := s.at.Sub(tl[0].at).Seconds()
			rss = append(rss, plotter.XY{X: x, Y: float64(p.rssKB) / 1024})
			if p.goroutines >= 0 {
				gs = append(gs, plotter.XY{X: x, Y: p.goroutines})
			}
		}
		memLines = append(memLines, name, rss)
		if len(gs) > 0 {
			gorLines = append(gorLines, name, gs)
		}
	}
	if err := plotutil.AddLines(mem, memLines...); err != nil {
		return err
	}
	if err := plotutil.AddLines(gor, gorLines...); err != nil {
		return err
	}
	return writePlots(path, [][]*plot.Plot{{mem}, {gor}})
}
