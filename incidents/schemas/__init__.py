"""Request and response schemas, named by direction; they validate at the edge and generate OpenAPI."""

# Until every importer names the module it needs, the old flat names stay reachable here.
from incidents.schemas.base import (  # noqa: F401
    DEFAULT_LIMITS,
    Email,
    Limits,
    M,
    Phone,
    Strict,
    Text300,
    field_path,
    limits_of,
    parse,
    parse_query,
    utc_representable,
    validation_failed,
)
from incidents.schemas.incidents import (  # noqa: F401
    DETECTED_FLOOR,
    MAX_CLOCK_SKEW,
    ClassificationIn,
    CommentCreate,
    CommentUpdate,
    ContactIn,
    IncidentBatchCreate,
    IncidentCreate,
    IncidentUpdate,
    ParticipantIn,
    ReporterIn,
    TransitionIn,
)
from incidents.schemas.observables import ObservableIn, ObservablesAdd, normalise_hashes, normalise_value  # noqa: F401
from incidents.schemas.queries import SORTS, AuditQuery, IncidentQuery, PageQuery  # noqa: F401
from incidents.schemas.reads import (  # noqa: F401
    ClassificationRead,
    CommentRead,
    EventRead,
    IncidentCreated,
    IncidentPage,
    IncidentRead,
    ObservableRead,
    ParticipantRead,
    ProblemRead,
    SystemRead,
)
from incidents.schemas.registry import SystemCreate, TokenCreate  # noqa: F401
