package journal

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// The admin API's read side, as http.Handlers over a Journal. The router puts
// them in the admin listener's route table (with the replay, which needs the
// queue); they answer JSON errors as {"error": …, "detail": …}.

// ListHandler serves GET /-/events: {"events":[…],"next_cursor":…}.
func (j *Journal) ListHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := ParseFilter(r.URL.Query(), time.Now())
		if err != nil {
			writeError(w, http.StatusBadRequest, "Invalid filter", err)
			return
		}
		p, err := j.List(r.Context(), f)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "Journal query failed", err)
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
}

// GetHandler serves GET /-/events/{id}: the whole journey, 404 if unknown.
func (j *Journal) GetHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := j.Get(r.Context(), r.PathValue("id"))
		if errors.Is(err, ErrNotFound) {
			writeError(w, http.StatusNotFound, "Not found", errors.New("the journal has no event with this id (never received, dropped, or past retention)"))
			return
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, "Journal query failed", err)
			return
		}
		writeJSON(w, http.StatusOK, ev)
	})
}

// DeadLettersHandler serves GET /-/dead-letters?sink=&since=&limit=: the
// events with a dead-lettered delivery, as journeys, newest first.
func (j *Journal) DeadLettersHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		since, err := parseTime(q.Get("since"), time.Now())
		if err != nil {
			writeError(w, http.StatusBadRequest, "Invalid filter", errors.New("since: "+err.Error()))
			return
		}
		limit := 0
		if s := q.Get("limit"); s != "" {
			if limit, err = strconv.Atoi(s); err != nil || limit < 1 {
				writeError(w, http.StatusBadRequest, "Invalid filter", errors.New("limit: want a positive number"))
				return
			}
		}
		evs, err := j.DeadLetters(r.Context(), q.Get("sink"), since, limit)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "Journal query failed", err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"dead_letters": evs})
	})
}

// streamPing is how often an idle stream sends a comment, so that proxies
// keep it open and a client gone away is noticed.
const streamPing = 15 * time.Second

// StreamHandler serves GET /-/events/stream: server-sent events, one per
// new record the filters select (event: event|step, id: the record's seq,
// data: the Record as JSON). A client that reconnects with Last-Event-ID
// (browsers' EventSource do it on their own), or ?after=SEQ, gets what it
// missed first; otherwise the stream starts at the next record.
func (j *Journal) StreamHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := ParseFilter(r.URL.Query(), time.Now())
		if err != nil {
			writeError(w, http.StatusBadRequest, "Invalid filter", err)
			return
		}
		after := int64(-1)
		for _, s := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after")} {
			if s == "" {
				continue
			}
			if after, err = strconv.ParseInt(s, 10, 64); err != nil || after < 0 {
				writeError(w, http.StatusBadRequest, "Invalid Last-Event-ID", errors.New("want the seq of a record"))
				return
			}
			break
		}
		flusher, ok := w.(http.Flusher)
		if !ok {
			writeError(w, http.StatusInternalServerError, "Streaming unsupported", errors.New("the connection cannot be flushed"))
			return
		}
		// Subscribed before the answer's head goes out: a client that sees
		// the stream open (EventSource's open event) gets every record
		// committed after that.
		recs := j.Subscribe(r.Context(), f, after)
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		// retry: how long a browser waits before reconnecting.
		if _, err := w.Write([]byte("retry: 2000\n\n")); err != nil {
			return
		}
		flusher.Flush()
		ping := time.NewTicker(streamPing)
		defer ping.Stop()
		buf := make([]byte, 0, 1024)
		for {
			select {
			case rec, ok := <-recs:
				if !ok {
					return
				}
				data, _ := json.Marshal(rec)
				buf = append(buf[:0], "id: "...)
				buf = strconv.AppendInt(buf, rec.Seq, 10)
				buf = append(buf, "\nevent: "...)
				buf = append(buf, rec.Kind...)
				buf = append(buf, "\ndata: "...)
				buf = append(buf, data...)
				buf = append(buf, "\n\n"...)
				if _, err := w.Write(buf); err != nil {
					return
				}
				// Flush when nothing else is waiting, so that a burst goes out
				// in few writes and a lone record at once.
				if len(recs) == 0 {
					flusher.Flush()
				}
			case <-ping.C:
				if _, err := w.Write([]byte(": ping\n\n")); err != nil {
					return
				}
				flusher.Flush()
			case <-r.Context().Done():
				return
			}
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"Encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError answers {"error": title, "detail": err}.
func writeError(w http.ResponseWriter, status int, title string, err error) {
	writeJSON(w, status, map[string]string{"error": title, "detail": err.Error()})
}
