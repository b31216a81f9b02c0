package publish

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/paystream/paystream/payment"
)

// Kind says what a generated Item is.
type Kind uint8

// The kinds of generated items.
const (
	// KindValid is a new, valid payment request.
	KindValid Kind = iota + 1
	// KindDuplicate re-sends the exact body of an earlier valid item under
	// a new Nats-Msg-Id: JetStream stores it, and the workers' idempotency
	// table must recognise it.
	KindDuplicate
	// KindInvalid is a message that breaks the request contract; workers
	// dead-letter it with reason "invalid".
	KindInvalid
)

// String returns "valid", "duplicate" or "invalid".
func (k Kind) String() string {
	switch k {
	case KindValid:
		return "valid"
	case KindDuplicate:
		return "duplicate"
	case KindInvalid:
		return "invalid"
	}
	return "unknown"
}

// The kinds of invalid messages Generate produces (Item.Invalid).
const (
	InvalidBadJSON          = "bad_json"          // not JSON (cut short)
	InvalidFloatAmount      = "float_amount"      // amount_minor with a fraction
	InvalidMissingCurrency  = "missing_currency"  // no currency field
	InvalidXXXCurrency      = "xxx_currency"      // currency "XXX"
	InvalidCardNumber       = "card_number"       // a raw, Luhn-valid test card number in a text field
	InvalidMerchantMismatch = "merchant_mismatch" // body merchant_id differs from the subject's
)

// invalidKinds lists the invalid kinds Generate picks from, uniformly.
var invalidKinds = [...]string{
	InvalidBadJSON, InvalidFloatAmount, InvalidMissingCurrency,
	InvalidXXXCurrency, InvalidCardNumber, InvalidMerchantMismatch,
}

// GenOptions shapes generated load. Duplicates + Invalid must not exceed 1.
type GenOptions struct {
	// Merchants is the number of merchants (ids m001, m002, …) the
	// requests spread over. Default (0) 10.
	Merchants int
	// Duplicates is the fraction (0..1) of items that re-send an earlier
	// valid item's body under a new Nats-Msg-Id.
	Duplicates float64
	// Invalid is the fraction (0..1) of invalid items.
	Invalid float64
	// CreatedAt, when not zero, sets created_at of item i to CreatedAt
	// plus i milliseconds (UTC); zero omits created_at.
	CreatedAt time.Time
}

// Validate returns every problem of o joined in one error, or nil.
func (o GenOptions) Validate() error {
	var errs []error
	if o.Merchants < 0 {
		errs = append(errs, fmt.Errorf("merchants %d: must not be negative", o.Merchants))
	}
	if !(o.Duplicates >= 0 && o.Duplicates <= 1) {
		errs = append(errs, fmt.Errorf("duplicates %v: must be a fraction between 0 and 1", o.Duplicates))
	}
	if !(o.Invalid >= 0 && o.Invalid <= 1) {
		errs = append(errs, fmt.Errorf("invalid %v: must be a fraction between 0 and 1", o.Invalid))
	}
	if o.Duplicates+o.Invalid > 1 {
		errs = append(errs, fmt.Errorf("duplicates %v + invalid %v: must not exceed 1", o.Duplicates, o.Invalid))
	}
	return errors.Join(errs...)
}

func (o GenOptions) merchants() int {
	if o.Merchants <= 0 {
		return 10
	}
	return o.Merchants
}

// Item is one generated message.
type Item struct {
	// Index is the i given to Generate.
	Index int
	// Kind says what the item is.
	Kind Kind
	// Merchant is the last token of the subject: the item goes to
	// Publisher.Subject(Merchant). For a merchant_mismatch item it differs
	// from the body's merchant_id.
	Merchant string
	// MsgID is the Nats-Msg-Id to publish with: the payment_id for valid
	// and invalid items, a new id for duplicates.
	MsgID string
	// Body is the message payload.
	Body []byte
	// PaymentID is the payment_id in the body (of the original, for a
	// duplicate).
	PaymentID string
	// Request is the decoded request of a valid or duplicate item (the
	// original's, for a duplicate), nil for an invalid one.
	Request *payment.Request
	// DuplicateOf is the Index of the original of a duplicate, -1 otherwise.
	DuplicateOf int
	// Invalid is the kind of invalidity of an invalid item (InvalidBadJSON,
	// …), empty otherwise.
	Invalid string
}

// Declined reports whether the fake gateway declines the item's payment:
// a valid or duplicate item whose amount_minor ends in 13 (docs/contract.md §8).
func (it Item) Declined() bool {
	return it.Request != nil && it.Request.AmountMinor%100 == 13
}

// Generate returns item i of the load determined by seed and opts: the same
// arguments always give the same item, and items can be generated in any
// order or concurrently. Each item is a duplicate with probability
// opts.Duplicates (unless no earlier item can be copied: item 0 never is),
// invalid with probability opts.Invalid, and valid otherwise. A duplicate
// copies a random earlier valid item; its DuplicateOf names that item.
// Generate panics if opts is invalid or i is negative.
func Generate(seed int64, i int, opts GenOptions) Item {
	if err := opts.Validate(); err != nil {
		panic("publish.Generate: " + err.Error())
	}
	if i < 0 {
		panic("publish.Generate: negative index")
	}
	rng := itemRand(seed, i)
	switch drawKind(rng, opts) {
	case KindDuplicate:
		if j, ok := pickOriginal(rng, seed, i, opts); ok {
			// j is valid or itself a duplicate: either way its body is
			// that of a valid item, the root.
			it := Generate(seed, j, opts)
			if it.Kind == KindValid {
				it.DuplicateOf = j
			}
			it.Index = i
			it.Kind = KindDuplicate
			it.MsgID = fmt.Sprintf("dup-%d-%s", i, it.PaymentID)
			return it
		}
		// Only invalid items (or none) before i: make this one valid.
		return genValid(rng, seed, i, opts)
	case KindInvalid:
		return genInvalid(rng, seed, i, opts)
	default:
		return genValid(rng, seed, i, opts)
	}
}

// itemRand returns the random source of item i. PCG's output is fixed by
// its seeds, across Go versions and platforms.
func itemRand(seed int64, i int) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), uint64(i)^0x9e3779b97f4a7c15)) //nolint:gosec // test load, not secrets
}

// drawKind is the first draw of every item's source: its base kind.
func drawKind(rng *rand.Rand, opts GenOptions) Kind {
	u := rng.Float64()
	switch {
	case u < opts.Duplicates:
		return KindDuplicate
	case u < opts.Duplicates+opts.Invalid:
		return KindInvalid
	default:
		return KindValid
	}
}

// pickOriginal picks an earlier item for duplicate i to copy: one whose
// base kind is valid or duplicate (an item whose base kind is duplicate is
// valid itself when nothing before it can be copied).
func pickOriginal(rng *rand.Rand, seed int64, i int, opts GenOptions) (int, bool) {
	if i == 0 {
		return 0, false
	}
	for range 32 {
		j := rng.IntN(i)
		if drawKind(itemRand(seed, j), opts) != KindInvalid {
			return j, true
		}
	}
	// Mostly invalid items: look for any other one.
	for j := i - 1; j >= 0; j-- {
		if drawKind(itemRand(seed, j), opts) != KindInvalid {
			return j, true
		}
	}
	return 0, false
}

// currencies are the currencies generated, with their share and a range of
// realistic amounts in major units.
var currencies = [...]struct {
	code               string
	weight             float64
	minMajor, maxMajor float64
}{
	{"USD", 0.50, 1, 2000},
	{"EUR", 0.25, 1, 2000},
	{"GBP", 0.15, 1, 1500},
	{"JPY", 0.10, 100, 300000},
}

var paymentMethods = [...]string{
	"pm_card_visa", "pm_card_visa_debit", "pm_card_mastercard",
	"pm_card_amex", "pm_card_discover", "pm_card_jcb",
}

var channels = [...]string{"web", "ios", "android", "pos"}

// testCardNumbers are well-known, Luhn-valid test card numbers, written as
// people paste them.
var testCardNumbers = [...]string{
	"4242 4242 4242 4242",
	"4242-4242-4242-4242",
	"4000056655665556",
	"5555 5555 5555 4444",
	"3782 822463 10005",
}

// merchantID returns the id of merchant k (0-based): m001, m002, …
func merchantID(k int) string { return fmt.Sprintf("m%03d", k+1) }

// genRequest draws a valid request for item i from rng.
func genRequest(rng *rand.Rand, seed int64, i int, opts GenOptions) *payment.Request {
	r := &payment.Request{
		PaymentID:     fmt.Sprintf("pay_%016x_%07d", uint64(seed), i),
		MerchantID:    merchantID(rng.IntN(opts.merchants())),
		CustomerID:    fmt.Sprintf("cus_%05d", rng.IntN(5000)),
		PaymentMethod: paymentMethods[rng.IntN(len(paymentMethods))],
	}
	// Currency by weight.
	u, c := rng.Float64(), currencies[len(currencies)-1]
	for _, cc := range currencies {
		if u < cc.weight {
			c = cc
			break
		}
		u -= cc.weight
	}
	r.Currency = c.code
	exp, ok := payment.CurrencyExponent(c.code)
	if !ok {
		panic("publish: generator currency " + c.code + " is not a currency")
	}
	scale := math.Pow10(exp)
	// Log-uniform: many small payments, a few large ones.
	lo, hi := math.Log(c.minMajor*scale), math.Log(c.maxMajor*scale)
	amount := int64(math.Exp(lo + rng.Float64()*(hi-lo)))
	switch v := rng.Float64(); {
	case v < 0.06: // the fake gateway declines amounts ending in 13
		amount = amount - amount%100 + 13
	case v < 0.20 && exp >= 2: // price points like 19.99
		amount = amount - amount%100 + 99
	case v < 0.35: // round amounts
		amount -= amount % 100
	}
	if amount < 1 {
		amount = 100
	}
	r.AmountMinor = amount
	if rng.Float64() < 0.2 {
		r.IdempotencyKey = "idem-" + r.PaymentID
	}
	order := fmt.Sprintf("ord_%08d", rng.IntN(100_000_000))
	r.Description = "Order " + order
	r.Metadata = map[string]string{
		"order_id": order,
		"channel":  channels[rng.IntN(len(channels))],
	}
	if !opts.CreatedAt.IsZero() {
		r.CreatedAt = opts.CreatedAt.Add(time.Duration(i) * time.Millisecond).UTC()
	}
	return r
}

// genValid returns valid item i drawn from rng.
func genValid(rng *rand.Rand, seed int64, i int, opts GenOptions) Item {
	r := genRequest(rng, seed, i, opts)
	body, err := r.Marshal()
	if err != nil {
		// Only a created_at beyond year 9999 could do this.
		panic("publish: generate: marshal request: " + err.Error())
	}
	return Item{
		Index:       i,
		Kind:        KindValid,
		Merchant:    r.MerchantID,
		MsgID:       r.PaymentID,
		Body:        body,
		PaymentID:   r.PaymentID,
		Request:     r,
		DuplicateOf: -1,
	}
}

// genInvalid returns invalid item i drawn from rng: a valid request broken
// in one way.
func genInvalid(rng *rand.Rand, seed int64, i int, opts GenOptions) Item {
	r := genRequest(rng, seed, i, opts)
	kind := invalidKinds[rng.IntN(len(invalidKinds))]
	it := Item{
		Index:       i,
		Kind:        KindInvalid,
		Merchant:    r.MerchantID,
		MsgID:       r.PaymentID,
		PaymentID:   r.PaymentID,
		DuplicateOf: -1,
		Invalid:     kind,
	}
	valid, err := r.Marshal()
	if err != nil {
		panic("publish: generate: marshal request: " + err.Error())
	}
	// Break the request through a generic object, so that any field can be
	// removed or given a value of the wrong type.
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(valid))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		panic("publish: generate: " + err.Error())
	}
	switch kind {
	case InvalidBadJSON:
		it.Body = valid[:len(valid)/2]
		return it
	case InvalidFloatAmount:
		obj["amount_minor"] = json.Number(fmt.Sprintf("%d.5", r.AmountMinor/100))
	case InvalidMissingCurrency:
		delete(obj, "currency")
	case InvalidXXXCurrency:
		obj["currency"] = "XXX"
	case InvalidCardNumber:
		card := testCardNumbers[rng.IntN(len(testCardNumbers))]
		switch rng.IntN(3) {
		case 0:
			obj["description"] = "Order paid with card " + card
		case 1:
			obj["metadata"] = map[string]string{"note": "card " + card}
		default:
			obj["payment_method"] = card
		}
	case InvalidMerchantMismatch:
		k := rng.IntN(opts.merchants())
		if merchantID(k) == r.MerchantID {
			k = (k + 1) % max(opts.merchants(), 2)
		}
		it.Merchant = merchantID(k)
	}
	body, err := json.Marshal(obj)
	if err != nil {
		panic("publish: generate: " + err.Error())
	}
	it.Body = body
	return it
}
