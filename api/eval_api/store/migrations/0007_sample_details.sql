-- What explains an lm-eval task's score of a sample: each filter's answer and the reference
-- (generate_until), or every choice's log-likelihood, the chosen one and the gold
-- (multiple_choice). NULL for scorer tasks, whose answer is the response itself.

ALTER TABLE samples ADD COLUMN details jsonb;

COMMENT ON COLUMN samples.details IS 'lm-eval tasks: the filtered answers and reference, or each choice''s log-likelihood with the chosen one and the gold.';
