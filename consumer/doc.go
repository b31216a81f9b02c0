// Package consumer is the JetStream side of a worker (docs/contract.md §3, §4):
// it provisions the streams and the durable pull consumer, pulls payment
// requests into a bounded pool, and carries out processing's decisions.
//
// Consumer.Run owns every goroutine it starts. Its pull loop fetches only as
// many messages as there are free slots (and as Processor.Admit allows while
// the breaker is open or half-open), so no message's ack timer runs in a
// local buffer. Each message runs in its own slot with an InProgress
// heartbeat: Process returns a processing.Decision, and act publishes the
// outcome event and dead letter (awaited) before it Acks or Terms, or naks
// with the decision's delay; a failed publish naks, never drops. Run stops
// in two stages: stop pulling and drain, then cancel after ShutdownTimeout.
// Republish serves the sweeper.
package consumer
