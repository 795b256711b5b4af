"""Whether classes are linearly separable: then logistic and softmax regression have no minimum.

Separable classes let the loss fall forever while the weights grow, so no first-order test can
hold and a run would only end at its budget. A linear program decides it before training: the
classes are separable exactly when some W, b satisfy

    (w_{y_i} - w_k)·x_i + (b_{y_i} - b_k) >= 1     for every row i and every class k != y_i

(for two classes with one logit: (2y_i - 1)(w·x_i + b) >= 1). HiGHS (scipy.optimize.linprog)
answers in milliseconds to seconds on the sizes it is asked about (MAX_CELLS).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from gdlab.data.arrays import CHUNK_ROWS, FloatArray, IntArray

if TYPE_CHECKING:
    from torch import nn

    from gdlab.problem import Problem
    from gdlab.train.state import Split

MAX_CELLS = 500_000  # rows x features x (classes - 1) above which the question is not asked
TIME_LIMIT = 2.0  # seconds HiGHS may take before the answer is "unknown"


def linearly_separable(X: FloatArray, codes: IntArray, n_classes: int) -> bool | None:
    """True when a hyperplane (one per class pair, as softmax has) separates every row of X by
    its class code; False when none does; None when the problem is too large or timed out."""
    from scipy import sparse  # imported when asked: most runs never are
    from scipy.optimize import linprog

    n, d = X.shape
    pairs = max(n_classes - 1, 1)
    if n * d * pairs > MAX_CELLS or n_classes < 2:
        return None
    A = np.column_stack([X, np.ones(n)])  # (n, d + 1): the intercept as a feature
    if n_classes == 2:
        signs = (2.0 * codes - 1.0)[:, None]
        constraints = sparse.csr_matrix(-signs * A)
        width = d + 1
    else:
        width = n_classes * (d + 1)
        row_of = np.repeat(np.arange(n), n_classes)
        wrong = np.tile(np.arange(n_classes), n)
        keep = wrong != codes[row_of]
        row_of, wrong = row_of[keep], wrong[keep]  # one constraint per (row, wrong class)
        count, span = len(row_of), np.arange(d + 1)
        rows = np.repeat(np.arange(count), 2 * (d + 1))
        true_cols = codes[row_of][:, None] * (d + 1) + span
        wrong_cols = wrong[:, None] * (d + 1) + span
        cols = np.concatenate([true_cols, wrong_cols], axis=1).reshape(-1)
        values = np.concatenate([-A[row_of], A[row_of]], axis=1).reshape(-1)
        constraints = sparse.csr_matrix((values, (rows, cols)), shape=(count, width))
    result = linprog(
        np.zeros(width),
        A_ub=constraints,
        b_ub=-np.ones(constraints.shape[0]),
        bounds=(None, None),
        method="highs",
        options={"time_limit": TIME_LIMIT},
    )
    if result.status == 0:
        return True
    if result.status == 2:  # infeasible: no separating hyperplane
        return False
    return None


def separable_training_rows(problem: Problem) -> bool | None:
    """Linear classifiers without a penalty: are the training rows linearly separable? Then
    no minimum exists, and the user hears it before the run. None where not asked (another
    model, a penalty, a resumed run) or too large to ask (the rows are not copied for it)."""
    opts = problem.opts
    if (
        not opts.is_classifier
        or problem.custom_model is not None
        or not problem.spec.is_linear_in_parameters
        or opts.weight_decay > 0
        or opts.l1 > 0
        or problem.classes is None
        or problem.previous is not None
    ):
        return None
    rows, classes = problem.train_rows, len(problem.classes)
    if len(rows) * problem.source.width * max(classes - 1, 1) > MAX_CELLS:
        return None
    features, codes = problem.source.take(rows)
    return linearly_separable(features, codes.astype(np.int64), classes)


def separates(net: nn.Module, split: Split) -> bool:
    """Whether a classifier puts every training row strictly on its own side: a positive
    margin for one logit (labels 0/1), the true class's logit above all others for softmax."""
    import torch

    with torch.no_grad():  # a check, not part of training: no graph
        for X, labels in split.blocks(CHUNK_ROWS):
            scores = net(X)
            if scores.shape[1] == 1:
                margins = (2 * labels.reshape(-1) - 1) * scores[:, 0]
            else:
                true = scores.gather(1, labels.reshape(-1, 1).long())
                others = scores.scatter(1, labels.reshape(-1, 1).long(), -math.inf)
                margins = (true - others.max(dim=1, keepdim=True).values).reshape(-1)
            if not bool((margins > 0).all()):
                return False
        return True
