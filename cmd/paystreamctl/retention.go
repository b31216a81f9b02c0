package main

// retentionCommands are the retention commands (docs/contract.md §9).
func retentionCommands() []command {
	return nil
}
