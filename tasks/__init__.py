"""SeqIO task registrations, vocabularies, preprocessors, readers and metrics for medmt5."""
