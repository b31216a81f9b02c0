package store

import "github.com/jackc/pgx/v5/pgtype"

// textArray is a text[] parameter that pgx encodes without an allocation
// per element. pgx encodes a []string through pgtype.FlatArray, whose Index
// returns each string in an interface, which allocates a copy of its
// header; textArray's Index returns a pointer to the element instead
// (pointer-shaped, no allocation), and the element gives its text through
// pgtype.TextValuer. A nil textArray is NULL, an empty one '{}', as with
// []string.
type textArray []string

func (a textArray) Dimensions() []pgtype.ArrayDimension {
	if a == nil {
		return nil
	}
	return []pgtype.ArrayDimension{{Length: int32(len(a)), LowerBound: 1}}
}

func (a textArray) Index(i int) any { return (*textElem)(&a[i]) }

func (a textArray) IndexType() any { return (*textElem)(nil) }

// textElem is an element of a textArray.
type textElem string

func (e *textElem) TextValue() (pgtype.Text, error) {
	return pgtype.Text{String: string(*e), Valid: true}, nil
}
