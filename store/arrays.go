package store

import (
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// textArray, int8Array and timeArray are array parameters (text[],
// bigint[], timestamptz[]) that pgx encodes without an allocation per
// element. pgx encodes a []string, []int64 or []time.Time through
// pgtype.FlatArray, whose Index returns each element in an interface, which
// allocates a copy of it (a string header, an int64 past 255, a time.Time);
// these arrays' Index returns a pointer to the element instead
// (pointer-shaped, no allocation), and the element gives its value through
// the codec's valuer interface. A nil array is NULL, an empty one '{}', as
// with the plain slices.
type (
	textArray []string
	int8Array []int64
	timeArray []time.Time
)

// dims is the dimensions of a one-dimensional array of n elements, nil
// (NULL) when isNil.
func dims(n int, isNil bool) []pgtype.ArrayDimension {
	if isNil {
		return nil
	}
	return []pgtype.ArrayDimension{{Length: int32(n), LowerBound: 1}}
}

func (a textArray) Dimensions() []pgtype.ArrayDimension { return dims(len(a), a == nil) }
func (a textArray) Index(i int) any                     { return (*textElem)(&a[i]) }
func (a textArray) IndexType() any                      { return (*textElem)(nil) }

func (a int8Array) Dimensions() []pgtype.ArrayDimension { return dims(len(a), a == nil) }
func (a int8Array) Index(i int) any                     { return (*int8Elem)(&a[i]) }
func (a int8Array) IndexType() any                      { return (*int8Elem)(nil) }

func (a timeArray) Dimensions() []pgtype.ArrayDimension { return dims(len(a), a == nil) }
func (a timeArray) Index(i int) any                     { return (*timeElem)(&a[i]) }
func (a timeArray) IndexType() any                      { return (*timeElem)(nil) }

// textElem, int8Elem and timeElem are the elements, as the codecs read
// them.
type (
	textElem string
	int8Elem int64
	timeElem time.Time
)

func (e *textElem) TextValue() (pgtype.Text, error) {
	return pgtype.Text{String: string(*e), Valid: true}, nil
}

func (e *int8Elem) Int64Value() (pgtype.Int8, error) {
	return pgtype.Int8{Int64: int64(*e), Valid: true}, nil
}

func (e *timeElem) TimestamptzValue() (pgtype.Timestamptz, error) {
	return pgtype.Timestamptz{Time: time.Time(*e), Valid: true}, nil
}
