// Package console is paystream's operator console: the answers and repairs
// of paystreamctl (package ops) in a browser, served by `paystreamctl
// console` (docs/operations.md, "The console").
//
// The console is a second face of package ops: every query and action it
// offers is an ops function that the command line calls too, and it never
// reaches the database or the streams by itself (internal/archtest keeps it
// so). Pages are rendered on the server from templates embedded in the
// binary, with one small embedded script and style sheet: no build step, no
// CDN, nothing fetched from elsewhere.
//
// Security: the console is read-only unless Config.AllowActions; an action
// (a replay's dry-run preview and the replay itself) needs a POST with the
// page's CSRF token and an identity, from HTTP basic authentication against
// bcrypt hashes or from a header set by a trusted reverse proxy; every
// action is audited in operator_actions under that identity. Card numbers
// are masked in everything rendered, and every response carries a Content
// Security Policy without inline script, frame denial, nosniff and a
// referrer policy.
package console
