package console

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/paystream/paystream/ops"
)

// outcomeChart renders buckets as a stacked bar chart in SVG: succeeded,
// declined and failed per bucket, oldest on the left. Only numbers and
// fixed words go into the markup, so it is safe to embed as is. Colours
// come from the style sheet's classes (the CSP allows no inline style).
func outcomeChart(buckets []ops.Bucket, step time.Duration) template.HTML {
	const (
		w, h          = 720.0, 220.0
		left, right   = 48.0, 8.0
		top, bottom   = 10.0, 28.0
		plotW, plotH  = w - left - right, h - top - bottom
		gridLines     = 4
		minBarSpacing = 1.0
	)
	var maxTotal, sum, succ, decl, fail int64
	for _, b := range buckets {
		maxTotal = max(maxTotal, b.Total())
		sum += b.Total()
		succ, decl, fail = succ+b.Succeeded, decl+b.Declined, fail+b.Failed
	}
	scaleMax := niceCeil(maxTotal)
	var sb strings.Builder
	window := time.Duration(len(buckets)) * step
	fmt.Fprintf(&sb, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">`, w, h)
	fmt.Fprintf(&sb, `<title id="chart-title">Outcomes per %s over the last %s</title>`, roundDuration(step), roundDuration(window))
	fmt.Fprintf(&sb, `<desc id="chart-desc">%d payments became final: %d succeeded, %d declined, %d failed; the busiest %s had %d.</desc>`,
		sum, succ, decl, fail, roundDuration(step), maxTotal)
	for i := 0; i <= gridLines; i++ {
		y := top + plotH - plotH*float64(i)/gridLines
		v := scaleMax * int64(i) / gridLines
		fmt.Fprintf(&sb, `<line class="grid" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, left, y, w-right, y)
		fmt.Fprintf(&sb, `<text class="axis" x="%.1f" y="%.1f" text-anchor="end">%s</text>`, left-6, y+4, thousands(v))
	}
	if n := len(buckets); n > 0 {
		bw := plotW / float64(n)
		for i, b := range buckets {
			x := left + float64(i)*bw
			y := top + plotH
			for _, part := range []struct {
				class string
				n     int64
			}{{"succeeded", b.Succeeded}, {"declined", b.Declined}, {"failed", b.Failed}} {
				if part.n == 0 || scaleMax == 0 {
					continue
				}
				bh := plotH * float64(part.n) / float64(scaleMax)
				y -= bh
				fmt.Fprintf(&sb, `<rect class="bar-%s" x="%.2f" y="%.2f" width="%.2f" height="%.2f"><title>%s: %d %s</title></rect>`,
					part.class, x+minBarSpacing/2, y, max(bw-minBarSpacing, 0.5), bh, b.Start.UTC().Format("15:04"), part.n, part.class)
			}
		}
		for _, i := range []int{0, n / 2, n - 1} {
			x := left + float64(i)*bw + bw/2
			label := "−" + roundDuration(time.Duration(n-i)*step)
			if i == n-1 {
				label = "now"
			}
			fmt.Fprintf(&sb, `<text class="axis" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x, h-8, label)
		}
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String()) //nolint:gosec // numbers and fixed words only
}

// niceCeil rounds n up to 1, 2 or 5 times a power of ten (at least 4, so
// that the grid's four steps are whole numbers).
func niceCeil(n int64) int64 {
	if n <= 4 {
		return 4
	}
	p := int64(1)
	for p*10 < n {
		p *= 10
	}
	for _, m := range []int64{1, 2, 4, 5, 10} {
		if m*p >= n && (m*p)%4 == 0 {
			return m * p
		}
	}
	return 10 * p
}
