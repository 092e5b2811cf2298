"""Evaluation metrics: FID / IS / mIS / AM / NDB from classifier outputs, periodicity, NLL."""

from sashimi.metrics.scores import NDBResult as NDBResult
from sashimi.metrics.scores import am_score as am_score
from sashimi.metrics.scores import fid as fid
from sashimi.metrics.scores import inception_score as inception_score
from sashimi.metrics.scores import modified_inception_score as modified_inception_score
from sashimi.metrics.scores import ndb as ndb
from sashimi.metrics.scores import ndb_from_labels as ndb_from_labels
