package payment

// MaskCardNumbersJSONRounds is maskCardNumbersJSON, for tests of the bound
// on its rounds.
var MaskCardNumbersJSONRounds = maskCardNumbersJSON
