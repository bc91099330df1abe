"""What every analysis shares and that runs no model: result types, the contract, thresholds, phrases, number
formatting, plots, metrics, statistics."""
