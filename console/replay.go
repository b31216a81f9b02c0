package console

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/paystream/paystream/ops"
)

// A replay from the console is two actions, as on the command line: a dry
// run (the preview: every item's plan and every refusal explained, audited
// as a dry run), then the replay of exactly what was previewed, at a rate,
// run by a goroutine the server owns (Close cancels and waits for it) while
// a page shows its progress.

// maxPreviews bounds the previews kept for a later run.
const maxPreviews = 100

// preview is a dry run that may be run: its selection, who made it.
type preview struct {
	req   ops.ReplayRequest
	actor string
}

// job is a replay in progress or done.
type job struct {
	ID        int
	Actor     string
	PreviewID int64
	Rate      float64
	Started   time.Time

	mu       sync.Mutex
	done     int
	total    int
	finished time.Time
	report   ops.ReplayReport
	err      error
}

// jobView is a consistent copy of a job for a template.
type jobView struct {
	ID        int
	Actor     string
	PreviewID int64
	Rate      float64
	Started   time.Time
	Done      int
	Total     int
	Running   bool
	Finished  time.Time
	Report    ops.ReplayReport
	Error     string
}

func (j *job) view() jobView {
	j.mu.Lock()
	defer j.mu.Unlock()
	v := jobView{ID: j.ID, Actor: j.Actor, PreviewID: j.PreviewID, Rate: j.Rate, Started: j.Started, Done: j.done,
		Total: j.total, Running: j.finished.IsZero(), Finished: j.finished, Report: j.report}
	if j.err != nil {
		v.Error = mask(j.err.Error())
	}
	return v
}

type previewData struct {
	Report    ops.ReplayReport
	PreviewID int64
	Rate      float64
	Selection string
}

// replayPreview is POST /dlq/preview: a dry run of the dead letters named
// by seq fields, or else of the filter's.
func (s *Server) replayPreview(w http.ResponseWriter, r *http.Request, who string) {
	req := ops.ReplayRequest{DryRun: true, Actor: who}
	var selection string
	if seqs := r.PostForm["seq"]; len(seqs) > 0 {
		for _, v := range seqs {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || n == 0 {
				s.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("%q is not a dead-letter sequence.", v))
				return
			}
			req.Seqs = append(req.Seqs, n)
		}
		selection = fmt.Sprintf("dead letters %v", req.Seqs)
	} else {
		form := readDLQForm(r.PostForm)
		f, err := form.filter()
		if err != nil {
			s.refuse(w, r, http.StatusBadRequest, err.Error())
			return
		}
		if len(f.Reasons) == 0 {
			s.refuse(w, r, http.StatusBadRequest, "Choose at least one reason to replay a filtered set (as `dlq replay --reason`).")
			return
		}
		req.Filter = f
		selection = fmt.Sprintf("the dead letters of %v matching the filter", f.Reasons)
	}
	if r.PostForm.Get("charge_missing_row") == "on" {
		req.ChargeMissingRow = true
	}
	rep, err := s.backend.Replay(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.mu.Lock()
	req.DryRun = false
	s.previews[rep.ActionID] = preview{req: req, actor: who}
	s.order = append(s.order, rep.ActionID)
	if len(s.order) > maxPreviews {
		delete(s.previews, s.order[0])
		s.order = s.order[1:]
	}
	s.mu.Unlock()
	s.logger.Info().Str("actor", who).Int64("action_id", rep.ActionID).Int("items", len(rep.Items)).
		Int("charge", rep.Charge).Int("refused", rep.Refused).Msg("replay previewed")
	d := previewData{Report: rep, PreviewID: rep.ActionID, Rate: s.cfg.ReplayRate, Selection: selection}
	s.render(w, http.StatusOK, "preview.html", s.newPage(r, "Replay preview", "dlq", d))
}

// replayRun is POST /dlq/replay: the replay of a preview, at a rate, in
// the background; it redirects to the job's page.
func (s *Server) replayRun(w http.ResponseWriter, r *http.Request, who string) {
	id, _ := strconv.ParseInt(r.PostForm.Get("preview"), 10, 64)
	rate, err := strconv.ParseFloat(r.PostForm.Get("rate"), 64)
	if err != nil || rate <= 0 || rate > 10_000 {
		s.refuse(w, r, http.StatusBadRequest, "The rate must be a number of publishes per second between 0 and 10000.")
		return
	}
	s.mu.Lock()
	p, ok := s.previews[id]
	if ok && p.actor == who {
		delete(s.previews, id)
	}
	closed := s.closed
	s.mu.Unlock()
	switch {
	case !ok:
		s.refuse(w, r, http.StatusConflict, "No such preview: preview the replay first (a preview runs once, and the console keeps the last 100).")
		return
	case p.actor != who:
		s.refuse(w, r, http.StatusForbidden, "This preview was made by another operator: preview it yourself first.")
		return
	case closed:
		s.refuse(w, r, http.StatusServiceUnavailable, "The console is shutting down.")
		return
	}
	req := p.req
	req.Rate = rate
	j := &job{Actor: who, PreviewID: id, Rate: rate, Started: s.now().UTC()}
	req.Progress = func(done, total int) {
		j.mu.Lock()
		j.done, j.total = done, total
		j.mu.Unlock()
	}
	s.mu.Lock()
	s.nextJob++
	j.ID = s.nextJob
	s.jobs[j.ID] = j
	s.wg.Add(1)
	s.mu.Unlock()
	s.logger.Info().Str("actor", who).Int("job", j.ID).Int64("preview", id).Float64("rate", rate).Msg("replay started")
	go func() {
		defer s.wg.Done()
		rep, err := s.backend.Replay(s.ctx, req)
		j.mu.Lock()
		j.report, j.err, j.finished = rep, err, s.now().UTC()
		if j.total == 0 {
			j.total = len(rep.Items)
			j.done = j.total
		}
		j.mu.Unlock()
		ev := s.logger.Info()
		if err != nil {
			ev = s.logger.Error().Err(err)
		}
		ev.Str("actor", who).Int("job", j.ID).Int64("action_id", rep.ActionID).Int("published", rep.Published).
			Int("duplicates", rep.Duplicates).Int("refused", rep.Refused).Int("failed", rep.Failed).Msg("replay ended")
	}()
	http.Redirect(w, r, "/jobs/"+strconv.Itoa(j.ID), http.StatusSeeOther)
}

func (s *Server) jobPage(w http.ResponseWriter, r *http.Request) {
	id, _ := strconv.Atoi(r.PathValue("id"))
	s.mu.Lock()
	j := s.jobs[id]
	s.mu.Unlock()
	if j == nil {
		s.refuse(w, r, http.StatusNotFound, "No such replay (replays are kept until the console restarts; the audit keeps them for ever).")
		return
	}
	v := j.view()
	p := s.newPage(r, fmt.Sprintf("Replay %d", id), "dlq", v)
	if v.Running {
		p.Refresh = 1
	}
	s.render(w, http.StatusOK, "job.html", p)
}
