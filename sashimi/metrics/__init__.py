"""Evaluation metrics: FID / IS / mIS / AM / NDB from classifier outputs, periodicity, NLL."""

from sashimi.metrics.evaluation import LikelihoodWindow as LikelihoodWindow
from sashimi.metrics.evaluation import evaluate as evaluate
from sashimi.metrics.evaluation import evaluate_folders as evaluate_folders
from sashimi.metrics.evaluation import evaluation_table as evaluation_table
from sashimi.metrics.evaluation import select_likelihood_window as select_likelihood_window
from sashimi.metrics.evaluation import write_report as write_report
from sashimi.metrics.periodicity import periodicity as periodicity
from sashimi.metrics.scores import NDBResult as NDBResult
from sashimi.metrics.scores import am_score as am_score
from sashimi.metrics.scores import fid as fid
from sashimi.metrics.scores import inception_score as inception_score
from sashimi.metrics.scores import modified_inception_score as modified_inception_score
from sashimi.metrics.scores import ndb as ndb
from sashimi.metrics.scores import ndb_from_labels as ndb_from_labels
