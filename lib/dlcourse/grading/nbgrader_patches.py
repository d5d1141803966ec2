"""Run: what makes nbgrader's bookkeeping cheap: two patches applied once per process, and the
gradebook's missing indexes.

    one_engine_per_database()   # Gradebooks share one SQLAlchemy engine (and compiled SQL) per URL
    check_schemas_once()        # nbgrader's cell-metadata schema is checked against its meta-schema once
    open_gradebooks_once()      # a worker's Gradebooks check the database's tables and course once
    index_gradebook(gb)         # a student's scores are read without scanning the whole class's

The batch applies the first two before it forks its workers, which inherit them; each worker
applies them again (a spawned worker, on a Dask host, starts without them), and the third.
"""
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError


def one_engine_per_database() -> None:
    """nbgrader opens a Gradebook for every step of a student's grading (the submission, each
    preprocessor, the feedback), and each made a new SQLAlchemy engine that compiled the same
    SQL again. From here on, in this process and its forks (the workers), they share one engine
    per database URL, and with it the compiled statements; Gradebook.close() still gives back
    its connections (engine.dispose()), so no connection is open when a worker is forked, and
    the worker's own call drops any that might be (dispose(close=False))."""
    import nbgrader.api
    from sqlalchemy import create_engine
    if getattr(nbgrader.api.create_engine, "shared", False):
        for engine in nbgrader.api.create_engine.engines.values():   # in a fork: never a connection of
            engine.dispose(close=False)                              # the parent's (SQLAlchemy's own advice)
        return
    engines = {}

    def shared_engine(url, **options):
        key = (str(url), tuple(sorted(options.items())))
        if key not in engines:
            engines[key] = create_engine(url, **options)
        return engines[key]

    shared_engine.shared, shared_engine.engines = True, engines
    nbgrader.api.create_engine = shared_engine


def open_gradebooks_once() -> None:
    """nbgrader opens about nine Gradebooks while it grades and reports one student, and each
    one asked the database for its tables, ran `create_all` (one query per table) and looked up
    the course again: about 5 ms a Gradebook. From here on, in this process, a Gradebook on a
    database and course that an earlier Gradebook of this process has opened without error
    takes the engine and a session only, as nbgrader's own constructor does after those
    checks. Only the grading worker calls it: it lives for one student, on a gradebook the
    batch prepared before it started, so nothing removes those tables while it runs."""
    import nbgrader.api as api
    if getattr(api.Gradebook.__init__, "opened", None) is not None:
        return
    original, opened = api.Gradebook.__init__, set()

    def __init__(self, db_url, course_id="default_course", authenticator=None):
        key = (str(db_url), course_id)
        if key not in opened:
            original(self, db_url, course_id, authenticator)
            opened.add(key)
            return
        self.engine = api.create_engine(db_url, echo=False, future=True)
        self.db = api.scoped_session(api.sessionmaker(autoflush=True, bind=self.engine, future=True))
        self.course_id = course_id
        self.authenticator = authenticator

    __init__.opened = opened
    api.Gradebook.__init__ = __init__


class SchemaCheckedOnce:
    """What nbgrader's cell-metadata checks see as the `jsonschema` module: `validate(instance,
    schema)` as jsonschema's own (the same validator class, the same best-matching error raised),
    except that the schema itself is checked against its meta-schema once, not on each of the
    40 or so cells of each notebook nbgrader reads (that check cost a submission more than the
    validation). Anything else is jsonschema's."""

    def __init__(self):
        self.validators = {}   # id(schema) -> (schema, validator): the schema kept, so its id stays its own

    def validate(self, instance, schema, cls=None, *args, **kwargs):
        import jsonschema
        if cls is not None or args or kwargs:
            return jsonschema.validate(instance, schema, cls, *args, **kwargs)
        known = self.validators.get(id(schema))
        if known is None or known[0] is not schema:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
            known = self.validators[id(schema)] = (schema, cls(schema))
        error = jsonschema.exceptions.best_match(known[1].iter_errors(instance))
        if error is not None:
            raise error

    def __getattr__(self, name):
        import jsonschema
        return getattr(jsonschema, name)


def check_schemas_once() -> None:
    """nbgrader's cell-metadata validation (nbgraderformat.common) uses a SchemaCheckedOnce, in
    this process and its forks."""
    import nbgrader.nbgraderformat.common as common
    if not isinstance(common.jsonschema, SchemaCheckedOnce):
        common.jsonschema = SchemaCheckedOnce()


# the columns nbgrader's score queries filter by that its schema does not index (its unique
# constraints lead with the other column): without these every student's scores scan the grades
# of the whole class, and reading them slows as the class grows (3 ms a student at 100, 13 ms at 2,000)
FOREIGN_KEYS = (("grade", "notebook_id"), ("comment", "notebook_id"), ("submitted_notebook", "assignment_id"),
                ("submitted_assignment", "student_id"))


def index_gradebook(gb) -> None:
    """Add FOREIGN_KEYS' indexes to the gradebook of `gb` (an nbgrader Gradebook) where missing.
    Only indexes: nbgrader's tables, rows and migrations are untouched; a database that refuses
    them is graded without."""
    try:
        for table, column in FOREIGN_KEYS:
            gb.db.execute(text(f"CREATE INDEX IF NOT EXISTS ix_dlcourse_{table}_{column} ON {table} ({column})"))
        gb.db.commit()
    except SQLAlchemyError:
        gb.db.rollback()

