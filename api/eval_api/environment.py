"""The environment of a runner pod: what the operator's Job sets and the runner reads."""

API_KEY = "EVAL_API_KEY"
DATASET_DIR = "EVAL_DATASET_DIR"
PROGRESS_PORT = "EVAL_PROGRESS_PORT"
# The token POST /stop must carry (execution.earlyStop): from the run's control Secret.
STOP_TOKEN = "EVAL_STOP_TOKEN"  # noqa: S105 - the variable's name, not a token
CA_BUNDLE = "EVAL_CA_BUNDLE"
# dataset.huggingface: the Hub (or mirror) and the token, under the names huggingface_hub reads.
HF_ENDPOINT = "HF_ENDPOINT"
HF_TOKEN = "HF_TOKEN"
# Budgeted runs: where the run's ledger is mounted, and the Job controller's counts of the
# shard's earlier attempts (from the pod's annotations, through the downward API).
LEDGER_FILE = "EVAL_LEDGER_FILE"
INDEX_FAILURES = "EVAL_INDEX_FAILURES"
INDEX_IGNORED_FAILURES = "EVAL_INDEX_IGNORED_FAILURES"


def judge_key_env(index: int) -> str:
    """The variable holding the key of the index-th llm_judge scorer's judge."""
    return "EVAL_JUDGE_API_KEY" if index == 0 else f"EVAL_JUDGE_API_KEY_{index}"


# Runs inside an EvalSuite (spec.suiteRef): who the pod writes rows for, and where.
EVALUATION_UID = "EVAL_EVALUATION_UID"
EVALUATION_NAME = "EVAL_EVALUATION_NAME"
EVALUATION_NAMESPACE = "EVAL_EVALUATION_NAMESPACE"
SUITE = "EVAL_SUITE"
RUN = "EVAL_RUN"  # the run's name (the Job's): rows are keyed by (evaluation uid, run, sample id)
# A suite cell's run with execution.earlyStop and a suite baseline: its cell (<model>/<task>) and
# the baseline its regression gate pairs with ("previous" or "suite-run:<id>").
CELL = "EVAL_CELL"
BASELINE = "EVAL_BASELINE"
# The store (PostgreSQL): either a whole connection URI, or its parts, as the keys of a
# CloudNativePG app Secret (uri, or host/port/dbname/username/password). The URI and the
# password come only from Secrets, by secretKeyRef; host, port, dbname and user may be plain.
STORE_URI = "EVAL_STORE_URI"
STORE_HOST = "EVAL_STORE_HOST"
STORE_PORT = "EVAL_STORE_PORT"
STORE_DBNAME = "EVAL_STORE_DBNAME"
STORE_USER = "EVAL_STORE_USER"
STORE_PASSWORD = "EVAL_STORE_PASSWORD"  # noqa: S105 - the variable's name, not a password
STORE_SSLMODE = "EVAL_STORE_SSLMODE"
# An external store's Secret reaches the pod whole (envFrom, this prefix before each key:
# EVAL_STORE_SECRET_uri, EVAL_STORE_SECRET_password, ...): it may hold uri, or the parts, or
# both, and a Secret that does not exist stops the pod (CreateContainerConfigError) instead of
# starting it with no store.
STORE_SECRET_PREFIX = "EVAL_STORE_SECRET_"
# The keys of a CloudNativePG app Secret and the variables they stand for.
STORE_SECRET_KEYS = {
    "uri": STORE_URI,
    "host": STORE_HOST,
    "port": STORE_PORT,
    "dbname": STORE_DBNAME,
    "username": STORE_USER,
    "password": STORE_PASSWORD,
}
STORE_SSLROOTCERT = "EVAL_STORE_SSLROOTCERT"  # path of the CA bundle verify-ca/verify-full use
# Tuning of the runner's sample writer (optional; the defaults suit a pod): rows per batch,
# and how long the store may fail in a row before the shard stops with StoreUnavailable.
STORE_BATCH_ROWS = "EVAL_STORE_BATCH_ROWS"
STORE_UNAVAILABLE_AFTER_SECONDS = "EVAL_STORE_UNAVAILABLE_AFTER_SECONDS"
# The response cache (Redis): a redis:// or rediss:// URL holding its password, from a Secret.
CACHE_URL = "EVAL_CACHE_URL"
CACHE_TTL_SECONDS = "EVAL_CACHE_TTL_SECONDS"

# The proxies in front of an EvalSuite's dashboard (spec.dashboard.trustedProxies), as CIDRs
# separated by commas: their X-Forwarded-For names the client the rate limit counts.
DASHBOARD_TRUSTED_PROXIES = "EVAL_DASHBOARD_TRUSTED_PROXIES"
# The read-only role of an EvalSuite's dashboard: the migration Job creates it (or sets its
# password) with these; the dashboard pod logs in with them instead of the store's owner.
READER_USER = "EVAL_READER_USER"
READER_PASSWORD = "EVAL_READER_PASSWORD"  # noqa: S105 - the variable's name, not a password
# The application role of a managed store (what runners, cell reports, comparisons and backups
# log in as, never the superuser): the migration Job creates it (or sets its password) with these.
APP_USER = "EVAL_APP_USER"
APP_PASSWORD = "EVAL_APP_PASSWORD"  # noqa: S105 - the variable's name, not a password
# host:port of the managed cache, for the dashboard's readiness check (it holds no password:
# a NOAUTH answer proves the server is there).
CACHE_ENDPOINT = "EVAL_CACHE_ENDPOINT"
# The CA that signed the cache's certificate (an EvalSuite with spec.tls): the cache URL is
# then used as rediss://, the server's certificate and name verified against this file.
CACHE_CA_FILE = "EVAL_CACHE_CA_FILE"
