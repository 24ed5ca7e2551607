-- What the model was asked, so that the dashboard can show a wrong answer next to its
-- question; and the read path of the dashboard's worst-samples view.

ALTER TABLE samples ADD COLUMN prompt text;

COMMENT ON COLUMN samples.prompt IS 'The rendered chat messages sent to the model, as a JSON array of {role, content}; NULL in rows written before schema 5.';
