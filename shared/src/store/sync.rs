//! What a sync slice reads and writes: local rows with bases for a page in one query, bulk local writes, links, conflicts.
