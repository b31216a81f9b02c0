package outbox

// SetAfterPublishFunc makes r call f after a batch's PubAcks and before its
// delete; an error from f fails the round as a failed delete would.
func SetAfterPublishFunc(r *Relay, f func(partition int32) error) { r.afterPublishFunc = f }
