package payment

// DeadLetterReason says why a message was dead-lettered; it is the last token
// of the dead-letter subject payments.dlq.<reason> (docs/contract.md §4).
type DeadLetterReason string

// The dead-letter reasons of the contract. Each has a row in the verdict
// table below (its Verdict); adding a reason is a constant and a row here,
// plus the code in processing that decides it.
const (
	ReasonInvalid         DeadLetterReason = "invalid"
	ReasonConflict        DeadLetterReason = "conflict"
	ReasonExhausted       DeadLetterReason = "exhausted"
	ReasonGatewayRejected DeadLetterReason = "gateway_rejected"
)

// Verdict is what became of one delivery of a payment request: the one
// classification that the consumer acts and logs on and that metrics count
// (label outcome of paystream_messages_total). Processing decides it once;
// nobody matches its name as text.
type Verdict uint8

// The verdicts. A verdict's name (String) is its metrics label.
const (
	// VerdictSucceeded: the payment was recorded succeeded and announced.
	VerdictSucceeded Verdict = iota + 1
	// VerdictDeclined: the payment was recorded declined and announced.
	VerdictDeclined
	// VerdictFailed: the payment was recorded failed and announced.
	VerdictFailed
	// VerdictDuplicate: the key is already final; its outcome was announced
	// again.
	VerdictDuplicate
	// VerdictInFlight: another message holds a live lease on the key and
	// will carry the payment to its end; this one was acked.
	VerdictInFlight
	// VerdictBusy: an earlier delivery of this same message still holds the
	// lease; retried when it ends.
	VerdictBusy
	// VerdictRetry: a retryable failure; retried with backoff.
	VerdictRetry
	// VerdictFenced: a write lost its lease (taken over, or already final);
	// the redelivery's claim tells which.
	VerdictFenced
	// VerdictShutdown: the worker stopped before the delivery finished;
	// retried without counting as a failure.
	VerdictShutdown
	// VerdictPanic: processing panicked; retried.
	VerdictPanic
	// VerdictPublishFailed: an outcome event or dead letter could not be
	// published; the message was nak'ed, never dropped.
	VerdictPublishFailed
	// VerdictInvalid: dead-lettered invalid.
	VerdictInvalid
	// VerdictConflict: dead-lettered conflict.
	VerdictConflict
	// VerdictExhausted: dead-lettered exhausted.
	VerdictExhausted
	// VerdictGatewayRejected: dead-lettered gateway_rejected.
	VerdictGatewayRejected

	verdictEnd // keep last
)

// Severity says how loudly a verdict is logged.
type Severity uint8

// The severities, from quiet to loud.
const (
	// SeverityRoutine: expected in normal operation (debug level).
	SeverityRoutine Severity = iota
	// SeverityNotice: worth a look when it repeats (warn level).
	SeverityNotice
	// SeverityAlert: an operator must act (error level).
	SeverityAlert
)

type verdictRow struct {
	name     string
	severity Severity
	// reason is the dead-letter reason of a dead-letter verdict.
	reason DeadLetterReason
	// status is the final status of a recorded-outcome verdict.
	status Status
}

// verdicts is the one table of verdicts: name, severity, and the
// dead-letter reason or final status each stands for.
var verdicts = [verdictEnd]verdictRow{
	0:                      {name: "unknown", severity: SeverityAlert},
	VerdictSucceeded:       {name: "succeeded", status: StatusSucceeded},
	VerdictDeclined:        {name: "declined", status: StatusDeclined},
	VerdictFailed:          {name: "failed", status: StatusFailed, severity: SeverityNotice},
	VerdictDuplicate:       {name: "duplicate"},
	VerdictInFlight:        {name: "in_flight"},
	VerdictBusy:            {name: "busy"},
	VerdictRetry:           {name: "retry", severity: SeverityNotice},
	VerdictFenced:          {name: "fenced", severity: SeverityNotice},
	VerdictShutdown:        {name: "shutdown"},
	VerdictPanic:           {name: "panic", severity: SeverityNotice},
	VerdictPublishFailed:   {name: "publish_failed", severity: SeverityNotice},
	VerdictInvalid:         {name: "invalid", severity: SeverityNotice, reason: ReasonInvalid},
	VerdictConflict:        {name: "conflict", severity: SeverityNotice, reason: ReasonConflict},
	VerdictExhausted:       {name: "exhausted", severity: SeverityAlert, reason: ReasonExhausted},
	VerdictGatewayRejected: {name: "gateway_rejected", severity: SeverityAlert, reason: ReasonGatewayRejected},
}

func (v Verdict) row() verdictRow {
	if v < verdictEnd {
		return verdicts[v]
	}
	return verdicts[0]
}

// String returns the snake_case name of v, its metrics label; "unknown" for
// a value outside the table.
func (v Verdict) String() string { return v.row().name }

// Severity says how loudly v is logged.
func (v Verdict) Severity() Severity { return v.row().severity }

// DeadLetter returns the dead-letter reason v stands for, and whether it is
// a dead-letter verdict.
func (v Verdict) DeadLetter() (DeadLetterReason, bool) {
	r := v.row().reason
	return r, r != ""
}

// Verdicts returns every verdict, in order: the label values of the
// outcome metrics.
func Verdicts() []Verdict {
	out := make([]Verdict, 0, verdictEnd-1)
	for v := VerdictSucceeded; v < verdictEnd; v++ {
		out = append(out, v)
	}
	return out
}

// DeadLetterReasons returns every dead-letter reason of the contract, in
// the verdict table's order.
func DeadLetterReasons() []DeadLetterReason {
	var out []DeadLetterReason
	for _, v := range Verdicts() {
		if r, ok := v.DeadLetter(); ok {
			out = append(out, r)
		}
	}
	return out
}

// Verdict returns the verdict of a message dead-lettered for r; 0 (whose
// String is "unknown") for a reason outside the contract.
func (r DeadLetterReason) Verdict() Verdict {
	for v := VerdictSucceeded; v < verdictEnd; v++ {
		if verdicts[v].reason == r {
			return v
		}
	}
	return 0
}

// Severity says how loudly a dead letter for r is logged.
func (r DeadLetterReason) Severity() Severity { return r.Verdict().Severity() }

// StatusVerdict returns the verdict of a delivery that recorded or found the
// final status s; 0 for a status that is not final.
func StatusVerdict(s Status) Verdict {
	for v := VerdictSucceeded; v < verdictEnd; v++ {
		if verdicts[v].status == s && s != "" {
			return v
		}
	}
	return 0
}
