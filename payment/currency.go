package payment

// CurrencyExponent returns the ISO 4217 minor-unit exponent of an active
// currency code (2 for USD: 1 USD = 100 minor units; 0 for JPY; 3 for BHD;
// 4 for CLF), and false when code is not an active currency that a payment
// can be made in.
//
// The code must be exactly three upper-case ASCII letters: "usd" is unknown.
// The supranational currencies XAF, XOF, XPF (exponent 0) and XCD, XCG
// (exponent 2) are currencies like any other. The other X codes of the list
// are not (docs/contract.md §2): precious metals (XAU, XAG, XPD, XPT), units
// of account and bond-market units (XDR, XBA–XBD, XSU, XUA), the testing
// code XTS and XXX, "no currency".
//
// The table is the ISO 4217 list one (currencies and funds) as of late 2025,
// without codes that have been withdrawn or are no longer legal tender
// (HRK, ANG, CUC, SLL, ZWL, VEF, MRO, STD, …). XCG, the Caribbean guilder,
// replaced ANG in 2025. BGN is still listed; it leaves the list when
// Bulgaria adopts the euro.
func CurrencyExponent(code string) (int, bool) {
	switch code {
	case "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
		"UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF":
		return 0, true
	case "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND":
		return 3, true
	case "CLF", "UYW":
		return 4, true
	case "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN",
		"BAM", "BBD", "BDT", "BGN", "BMD", "BND", "BOB", "BOV", "BRL", "BSD",
		"BTN", "BWP", "BYN", "BZD",
		"CAD", "CDF", "CHE", "CHF", "CHW", "CNY", "COP", "COU", "CRC", "CUP",
		"CVE", "CZK",
		"DKK", "DOP", "DZD",
		"EGP", "ERN", "ETB", "EUR",
		"FJD", "FKP",
		"GBP", "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD",
		"HKD", "HNL", "HTG", "HUF",
		"IDR", "ILS", "INR", "IRR",
		"JMD",
		"KES", "KGS", "KHR", "KPW", "KYD", "KZT",
		"LAK", "LBP", "LKR", "LRD", "LSL",
		"MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
		"MWK", "MXN", "MXV", "MYR", "MZN",
		"NAD", "NGN", "NIO", "NOK", "NPR", "NZD",
		"PAB", "PEN", "PGK", "PHP", "PKR", "PLN",
		"QAR",
		"RON", "RSD", "RUB",
		"SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD",
		"SSP", "STN", "SVC", "SYP", "SZL",
		"THB", "TJS", "TMT", "TOP", "TRY", "TTD", "TWD", "TZS",
		"UAH", "USD", "USN", "UYU", "UZS",
		"VED", "VES",
		"WST",
		"XCD", "XCG",
		"YER",
		"ZAR", "ZMW", "ZWG":
		return 2, true
	}
	return 0, false
}

// isNonCurrency reports whether code is one of the ISO 4217 codes that name
// no currency one can charge: precious metals (XAU, XAG, XPD, XPT),
// units of account and bond-market units (XDR, XBA, XBB, XBC, XBD, XSU,
// XUA), the testing code XTS, and XXX, "no currency" (docs/contract.md §2).
func isNonCurrency(code string) bool {
	switch code {
	case "XAU", "XAG", "XPD", "XPT", "XDR", "XBA", "XBB", "XBC", "XBD", "XSU", "XUA", "XTS", "XXX":
		return true
	}
	return false
}
