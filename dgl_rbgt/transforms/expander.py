"""Random expander edges for Exphormer-style sparse attention (Shirzad et al., ICML 2023).

`Exphormer: Sparse Transformers for Graphs <https://arxiv.org/abs/2303.06147>`__ lets every node
attend over its graph neighbours plus the edges of a random ``2d``-regular expander on the same
nodes, so information crosses the graph in ``O(log N)`` hops at ``O(N d)`` cost.

How the expander is drawn
-------------------------
``degree = d`` random maps ``pi_1 .. pi_d`` of the nodes give the directed edges
``i -> pi_k(i)``; every one is also added reversed (``pi_k(i) -> i``), so the edge set is
symmetric and every node has exactly ``2d`` outgoing and ``2d`` incoming expander edges (each map
is a bijection: ``i`` is the image of exactly one node).

* ``method="permutation"``: each ``pi_k`` is a uniformly random permutation.
* ``method="hamiltonian"``: each ``pi_k`` is a random Hamiltonian cycle: a random order
  ``a_0, a_1, ..., a_{N-1}`` of the nodes with ``pi_k(a_t) = a_{t+1 mod N}``.

Self-loops (fixed points ``pi_k(i) = i``) and duplicates (the same unordered pair from two maps,
or a permutation 2-cycle ``pi_k(pi_k(i)) = i``, which yields the pair twice after symmetrising) are
removed *without breaking regularity*: the offending entries are resampled. The entries at the
offending positions, together with about as many randomly chosen positions, are shuffled among
themselves (the array stays a permutation, or a single cycle for ``"hamiltonian"``), and only the
positions whose edges changed are checked again, until no conflict is left. A uniform random
permutation has ``O(d)`` conflicting entries in expectation whatever ``N`` is, so this takes a
few rounds on the changed positions only, and leaves every other entry exactly as drawn; the
result is a (very nearly uniform) random simple ``2d``-regular graph.

What is guaranteed
------------------
With the defaults (``self_loops=False, allow_duplicates=False``) and ``N >= 2d + 1`` nodes (the
fewest a simple ``2d``-regular graph can have) the added edges form a *simple* graph: no loop, no
repeated pair, every node with in- and out-degree exactly ``2d``, ``E = 2 d N`` added edges.
If the random repair has not converged after many rounds and restarts (only seen when ``N`` is a
few nodes above ``2d``), it logs a warning and falls back to a randomly relabelled deterministic
construction that meets the same guarantee but is a weaker expander: the circulant maps
``i -> i + s mod N``, ``s = 1..d`` for ``"permutation"``; for ``"hamiltonian"`` Walecki's
Hamiltonian cycles when ``N`` is odd, or ``d`` circulant steps coprime to ``N`` when there are
that many. Only if none exists (``"hamiltonian"``, even ``N`` just above ``2d``) it raises
:class:`~dgl.DGLError`.

``self_loops=True`` keeps fixed points as drawn. A loop is then added in both orientations like
every other edge, i.e. twice (as in the reference implementation), which keeps every degree equal
to ``2d``; with ``allow_duplicates=False`` a node still has at most one such pair and no other
repeated edge. ``allow_duplicates=True`` keeps repeated pairs (multi-edges) as drawn; the graph is
still exactly ``2d``-regular as a multigraph.

Minimum number of nodes (else :class:`~dgl.DGLError`): ``2d + 1`` without duplicates (``2d - 1``
for ``"permutation"`` with ``self_loops=True``), 2 with duplicates but no loops, 1 with both.
"""
from __future__ import annotations

import logging
import math
from typing import Literal, NamedTuple, Sequence

import dgl
import numpy as np
import torch
from dgl.base import DGLError
from dgl.transforms import BaseTransform

from dgl_rbgt._checks import check_bool, check_choice, check_homogeneous, check_positive_int
from dgl_rbgt.transforms.edge_types import ETYPE, EdgeType, append_typed_edges, edge_type_codes

__all__ = ["AddExpanderEdges", "SpectralGap", "spectral_gap", "random_expander_edges"]

logger = logging.getLogger(__name__)

METHODS = ("permutation", "hamiltonian")
# Repair budget: rounds per map, then full restarts, before the deterministic fallback. A large
# graph needs a handful of rounds; the budget only matters for graphs a few nodes above 2d.
_MAX_ROUNDS = 200
_MAX_RESTARTS = 30
# A draw whose gap is within this distance of the Ramanujan bound is accepted at once (the
# reference implementation's rule); otherwise up to ``max_tries`` draws are made, keeping the best.
_GAP_SLACK = 0.1
# Below this many nodes the Laplacian spectrum is computed densely (eigsh needs k < N and is
# slower than LAPACK on small matrices).
_DENSE_EIG_LIMIT = 1000


def _min_nodes(degree: int, method: str, self_loops: bool, allow_duplicates: bool) -> int:
    """Fewest nodes for which the requested kind of 2*degree-regular graph exists."""
    if not allow_duplicates:
        if method == "permutation" and self_loops:
            return 2 * degree - 1  # one loop pair per node + all other nodes
        return 2 * degree + 1  # simple 2d-regular graph
    return 1 if self_loops else 2


class _Conflicts:
    """Finds positions of the map being drawn whose edge is a loop or repeats an earlier edge."""

    def __init__(self, num_nodes: int, method: str, self_loops: bool, allow_duplicates: bool):
        self.n = num_nodes
        self.method = method
        self.self_loops = self_loops
        self.allow_duplicates = allow_duplicates
        self.prior: list[torch.Tensor] = []  # earlier maps pi_l (N,)
        self.prior_inv: list[torch.Tensor] = []  # their inverses

    def _repeats_prior(self, u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Whether the pair {u, w} is already an edge of an earlier map (u -> w or w -> u)."""
        bad = torch.zeros(u.shape, dtype=torch.bool)
        for fwd, inv in zip(self.prior, self.prior_inv):
            bad |= (fwd[u] == w) | (inv[u] == w)
        return bad

    def check(self, a: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Bool mask over ``pos``: the edge drawn at that position conflicts."""
        if self.method == "permutation":
            u, w = pos, a[pos]  # edge u -> pi(u)
            bad = torch.zeros(pos.shape, dtype=torch.bool)
            if not self.self_loops:
                bad |= w == u
            if not self.allow_duplicates:
                # a 2-cycle u -> w -> u gives the pair {u, w} twice (a fixed point is not one)
                bad |= (a[w] == u) & (w != u)
                bad |= self._repeats_prior(u, w)
            return bad
        # Hamiltonian: edge a[t] -> a[t+1]; a cycle on N >= 3 nodes has no loop or repeat itself.
        if self.allow_duplicates:
            return torch.zeros(pos.shape, dtype=torch.bool)
        return self._repeats_prior(a[pos], a[(pos + 1) % self.n])

    def affected(self, a: torch.Tensor, inv_a: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Positions whose conflict status may change when the entries at ``pos`` change."""
        if self.method == "permutation":
            # status of u reads pi(u) and pi(pi(u)): u itself, or u whose image was moved
            return torch.cat([pos, inv_a[pos]])
        return torch.cat([pos, (pos - 1) % self.n])

    def successor(self, a: torch.Tensor) -> torch.Tensor:
        """The map pi as an (N,) tensor: pi[u] is u's out-neighbour."""
        if self.method == "permutation":
            return a
        succ = torch.empty_like(a)
        succ[a] = torch.roll(a, -1)  # pi(a_t) = a_{t+1}
        return succ

    def accept(self, a: torch.Tensor) -> None:
        succ = self.successor(a)
        inv = torch.empty_like(succ)
        inv[succ] = torch.arange(self.n)
        self.prior.append(succ)
        self.prior_inv.append(inv)


def _draw_map(conf: _Conflicts, generator: torch.Generator | None) -> torch.Tensor | None:
    """One random permutation (or cycle order) with its conflicts resampled away; None if stuck."""
    n = conf.n
    a = torch.randperm(n, generator=generator)
    inv_a = torch.empty_like(a)
    inv_a[a] = torch.arange(n)
    pos = torch.arange(n)
    bad = pos[conf.check(a, pos)]
    for _ in range(_MAX_ROUNDS):
        if bad.numel() == 0:
            return a
        if conf.method == "hamiltonian":
            bad = torch.cat([bad, (bad + 1) % n])  # the edge at t is a[t] -> a[t+1]
        # shuffle the offending entries with about as many random ones (the array stays a
        # permutation; the random partners let a single bad entry move at all)
        extra = torch.randint(n, (bad.numel() + 2,), generator=generator)
        moved = torch.unique(torch.cat([bad, extra]))
        a[moved] = a[moved[torch.randperm(moved.numel(), generator=generator)]]
        inv_a[a[moved]] = moved
        recheck = torch.unique(conf.affected(a, inv_a, moved))
        bad = recheck[conf.check(a, recheck)]
    return a if bad.numel() == 0 else None


def _fallback_maps(
    num_nodes: int, degree: int, method: str, generator: torch.Generator | None
) -> list[torch.Tensor]:
    """Deterministic simple constructions, randomly relabelled; used when the repair is stuck.

    ``"permutation"``: the circulant maps ``i -> i + s (mod N)``, ``s = 1..d`` (simple for
    ``N >= 2d + 1``). ``"hamiltonian"``: Walecki's decomposition of the complete graph into
    Hamiltonian cycles when ``N`` is odd, else circulant steps ``s`` coprime to ``N`` (each a
    single ``N``-cycle), else :class:`~dgl.DGLError`.
    """
    base = torch.arange(num_nodes)
    orders = []  # each a cycle order, or None for a plain circulant map
    if method == "permutation":
        steps = list(range(1, degree + 1))
    elif num_nodes % 2 == 1:
        # Walecki: hub node N-1, the rest on a circle Z_{2m}; cycle k runs hub, k, k+1, k-1,
        # k+2, k-2, ..., k+m and back to the hub; cycles k = 0..m-1 share no edge.
        m = (num_nodes - 1) // 2
        zigzag = [0] + [z for j in range(1, m) for z in (j, -j)] + [m]  # 2m offsets
        zig = torch.tensor(zigzag)
        for k in range(degree):
            orders.append(torch.cat([torch.tensor([num_nodes - 1]), (k + zig) % (2 * m)]))
        steps = []
    else:
        # i -> i + s is a single N-cycle iff gcd(s, N) = 1; s and N - s give the same pairs
        steps = [s for s in range(1, (num_nodes - 1) // 2 + 1) if math.gcd(s, num_nodes) == 1]
        if len(steps) < degree:
            raise DGLError(
                f"could not draw {degree} edge-disjoint Hamiltonian cycles on {num_nodes} nodes; "
                f"use method='permutation', allow_duplicates=True or a smaller degree"
            )
        steps = steps[:degree]
    relabel = torch.randperm(num_nodes, generator=generator)  # node i of the construction is relabel[i]
    maps = []
    for s in steps:
        succ = torch.empty(num_nodes, dtype=torch.int64)
        succ[relabel] = relabel[(base + s) % num_nodes]
        maps.append(succ)
    for order in orders:
        order = relabel[order]
        succ = torch.empty(num_nodes, dtype=torch.int64)
        succ[order] = torch.roll(order, -1)
        maps.append(succ)
    return maps


def random_expander_edges(
    num_nodes: int,
    degree: int = 3,
    method: str = "permutation",
    *,
    self_loops: bool = False,
    allow_duplicates: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a random ``2 * degree``-regular expander; returns ``(src, dst)`` int64 of ``2 d N`` edges.

    See the module docstring for the construction and its guarantees. Randomness comes from
    ``generator`` (a CPU :class:`torch.Generator`), or torch's global generator when ``None``.
    The edges are ordered: ``i -> pi_1(i)`` for all ``i``, ..., ``i -> pi_d(i)``, then the same
    edges reversed.
    """
    check_positive_int(degree, "degree")
    check_choice(method, "method", METHODS)
    fewest = _min_nodes(degree, method, self_loops, allow_duplicates)
    if num_nodes < fewest:
        raise DGLError(
            f"a {2 * degree}-regular expander (degree={degree}, method={method!r}, "
            f"self_loops={self_loops}, allow_duplicates={allow_duplicates}) needs at least "
            f"{fewest} nodes, the graph has {num_nodes}; lower degree or allow duplicates"
        )
    maps = None
    for _ in range(_MAX_RESTARTS):
        conf = _Conflicts(num_nodes, method, self_loops, allow_duplicates)
        for _ in range(degree):
            a = _draw_map(conf, generator)
            if a is None:
                break
            conf.accept(a)
        if len(conf.prior) == degree:
            maps = conf.prior
            break
    if maps is None:
        logger.warning(
            "random expander repair did not converge on %d nodes (degree %d); using a randomly "
            "relabelled deterministic construction instead (simple and regular, but a weaker "
            "expander)",
            num_nodes,
            degree,
        )
        maps = _fallback_maps(num_nodes, degree, method, generator)
    src = torch.arange(num_nodes).repeat(degree)  # (d N,)
    dst = torch.cat(maps)  # (d N,)
    return torch.cat([src, dst]), torch.cat([dst, src])


class SpectralGap(NamedTuple):
    """Second-smallest Laplacian eigenvalue and the Ramanujan bound for the graph's degree."""

    gap: float
    ramanujan_bound: float


def spectral_gap(
    graph_or_edges: dgl.DGLGraph | Sequence[torch.Tensor],
    num_nodes: int | None = None,
    *,
    etype: int | None = int(EdgeType.EXPANDER),
) -> SpectralGap:
    r"""Spectral gap of an (expander) graph and the Ramanujan bound it is compared with.

    Computes :math:`\lambda_2(L)`, the second-smallest eigenvalue of the Laplacian
    :math:`L = D - A` (:math:`A` symmetrised, multi-edges counted), with
    :func:`scipy.sparse.linalg.eigsh` (dense LAPACK below 1000 nodes), and the bound
    :math:`D - 2\sqrt{D - 1}` for the mean degree :math:`D` (``2d`` for our expanders): a
    Ramanujan graph reaches it, random regular graphs come close, and :math:`\lambda_2 = 0` means
    the graph is disconnected.

    Parameters
    ----------
    graph_or_edges : DGLGraph or (src, dst) pair of tensors
        A graph, or its edges. For a graph with ``edata['etype']``, only edges with code
        ``etype`` are used (the expander itself, by default); ``etype=None`` uses all edges.
    num_nodes : int, optional
        Number of nodes; required with an edge pair, taken from the graph otherwise.

    Example
    -------
    >>> import dgl
    >>> from dgl_rbgt.transforms import AddExpanderEdges, spectral_gap
    >>> g = AddExpanderEdges(degree=3, seed=0)(dgl.graph(([], []), num_nodes=2000))
    >>> gap, bound = spectral_gap(g)
    >>> round(bound, 3), gap > 0.9 * bound  # 6 - 2 * sqrt(5); a random expander comes close
    (1.528, True)
    """
    if isinstance(graph_or_edges, dgl.DGLGraph):
        graph = graph_or_edges
        src, dst = graph.edges(order="eid")
        if etype is not None and ETYPE in graph.edata:
            keep = edge_type_codes(graph) == int(etype)
            src, dst = src[keep], dst[keep]
        num_nodes = graph.num_nodes() if num_nodes is None else num_nodes
    else:
        try:
            src, dst = graph_or_edges
        except (TypeError, ValueError):
            raise TypeError(
                "graph_or_edges must be a DGLGraph or a (src, dst) pair of tensors, got "
                f"{type(graph_or_edges).__name__}"
            ) from None
        src, dst = torch.as_tensor(src), torch.as_tensor(dst)
        if num_nodes is None:
            raise ValueError("num_nodes is required when graph_or_edges is an edge pair")
    check_positive_int(num_nodes, "num_nodes")
    import scipy.sparse as sp
    from scipy.sparse.linalg import LinearOperator, eigsh

    src_np = src.detach().cpu().numpy().astype(np.int64)
    dst_np = dst.detach().cpu().numpy().astype(np.int64)
    adj = sp.coo_matrix(
        (np.ones(src_np.size), (src_np, dst_np)), shape=(num_nodes, num_nodes)
    ).tocsr()  # duplicates summed: multi-edges count
    adj = (adj + adj.T) * 0.5
    deg = np.asarray(adj.sum(axis=1)).ravel()
    mean_deg = float(deg.mean())
    bound = mean_deg - 2.0 * math.sqrt(max(mean_deg - 1.0, 0.0))
    if num_nodes == 1:
        return SpectralGap(0.0, bound)
    lap = sp.diags(deg) - adj
    if num_nodes <= _DENSE_EIG_LIMIT:
        eig = np.linalg.eigvalsh(lap.toarray())
        return SpectralGap(float(eig[1]), bound)
    # Lift the constant vector (eigenvalue 0) above the spectrum, then ask for the smallest
    # eigenvalue: lambda_2 of L (0 again if the graph is disconnected).
    lift = 2.0 * float(deg.max()) + 1.0
    ones = np.full(num_nodes, 1.0 / math.sqrt(num_nodes))

    def matvec(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x).ravel()
        return lap @ x + lift * ones * (ones @ x)

    op = LinearOperator((num_nodes, num_nodes), matvec=matvec, dtype=np.float64)
    v0 = torch.rand(num_nodes, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    value = eigsh(op, k=1, which="SA", v0=v0.numpy(), tol=1e-6, return_eigenvectors=False)
    return SpectralGap(float(max(value[0], 0.0)), bound)


class AddExpanderEdges(BaseTransform):
    r"""Add the edges of a random ``2 * degree``-regular expander, typed ``EdgeType.EXPANDER``.

    The transform of `Exphormer <https://arxiv.org/abs/2303.06147>`__: returns a new graph with
    the input's edges (``edata['etype'] = 0``, ``EdgeType.GRAPH``) followed by ``2 * degree * N``
    expander edges (``edata['etype'] = 1``). How the expander is drawn, and exactly what is
    guaranteed about loops, duplicates and regularity, is described in
    :mod:`dgl_rbgt.transforms.expander`; by default it is simple and exactly ``2 d``-regular.

    The input graph is not modified. Node data is kept (the same tensors). Edge data is kept on
    the graph's edges; expander edges get zeros of the same dtype and trailing shape.
    An existing ``edata['etype']`` is accepted only if all its values are codes of
    :class:`~dgl_rbgt.transforms.edge_types.EdgeType` (an already augmented graph, e.g. with
    virtual nodes or a first expander, whose codes are kept); other values raise
    :class:`~dgl.DGLError`. For a batched graph (``dgl.batch``) every member gets its own
    expander and the batch information stays valid.

    Parameters
    ----------
    degree : int
        Number of random maps ``d``; each node gets ``2 d`` expander neighbours. Default: 3.
    method : str
        ``"permutation"`` (random permutations) or ``"hamiltonian"`` (random Hamiltonian
        cycles, which also makes the expander connected). Default: ``"permutation"``.
    seed : int or None
        Seed of a private generator: the same seed gives the same expander for the same number
        of nodes. ``None`` draws from torch's global generator, so ``torch.manual_seed`` makes
        runs repeat. Default: None.
    self_loops : bool
        Keep self-loops drawn by the maps (each as a pair of loop edges). Default: False.
    allow_duplicates : bool
        Keep repeated node pairs drawn by the maps. Default: False.
    check_spectral_gap : bool
        Compute the expander's spectral gap (:func:`spectral_gap`) and log it; draw up to
        ``max_tries`` expanders until one comes within 0.1 of the Ramanujan bound, keeping the
        best. Only for graphs (members of a batch) with fewer than ``spectral_gap_nodes_limit``
        nodes; larger ones are logged as skipped. Default: False.
    max_tries : int
        Draws allowed by ``check_spectral_gap``; ignored without it. Default: 1.
    spectral_gap_nodes_limit : int
        Node count from which the spectral check is skipped (its eigensolver grows
        super-linearly). Default: 50000.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_rbgt.transforms.expander import AddExpanderEdges
    >>> g = dgl.graph(([0, 1, 2], [1, 2, 3]), num_nodes=10)
    >>> g2 = AddExpanderEdges(degree=2, seed=0)(g)
    >>> g2.num_edges(), g2.edata["etype"].bincount().tolist()
    (43, [3, 40])
    """

    #: Marks its edges in ``edata['etype']`` (models that need typed edges check for one).
    writes_edge_types = True

    def __init__(
        self,
        degree: int = 3,
        method: Literal["permutation", "hamiltonian"] = "permutation",
        seed: int | None = None,
        self_loops: bool = False,
        allow_duplicates: bool = False,
        check_spectral_gap: bool = False,
        max_tries: int = 1,
        spectral_gap_nodes_limit: int = 50_000,
    ):
        self.degree = check_positive_int(degree, "degree")
        self.method = check_choice(method, "method", METHODS)
        if seed is not None:
            check_positive_int(seed, "seed", minimum=0)
        self.seed = seed
        check_bool(self_loops, "self_loops")
        check_bool(allow_duplicates, "allow_duplicates")
        check_bool(check_spectral_gap, "check_spectral_gap")
        self.self_loops = self_loops
        self.allow_duplicates = allow_duplicates
        self.check_spectral_gap = check_spectral_gap
        self.max_tries = check_positive_int(max_tries, "max_tries")
        self.spectral_gap_nodes_limit = check_positive_int(
            spectral_gap_nodes_limit, "spectral_gap_nodes_limit"
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(degree={self.degree}, method={self.method!r}, "
            f"seed={self.seed}, self_loops={self.self_loops}, "
            f"allow_duplicates={self.allow_duplicates}, "
            f"check_spectral_gap={self.check_spectral_gap}, max_tries={self.max_tries}, "
            f"spectral_gap_nodes_limit={self.spectral_gap_nodes_limit})"
        )

    def _draw(self, num_nodes: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One member's expander edges, with the optional spectral check and retries."""

        def draw() -> tuple[torch.Tensor, torch.Tensor]:
            return random_expander_edges(
                num_nodes,
                self.degree,
                self.method,
                self_loops=self.self_loops,
                allow_duplicates=self.allow_duplicates,
                generator=generator,
            )

        if not self.check_spectral_gap:
            return draw()
        if num_nodes >= self.spectral_gap_nodes_limit:
            logger.info(
                "spectral gap check skipped: %d nodes >= spectral_gap_nodes_limit=%d",
                num_nodes,
                self.spectral_gap_nodes_limit,
            )
            return draw()
        best, best_gap = None, -math.inf
        for attempt in range(1, self.max_tries + 1):
            edges = draw()
            gap, bound = spectral_gap(edges, num_nodes)
            logger.info(
                "expander on %d nodes, degree %d, draw %d/%d: spectral gap %.4f "
                "(Ramanujan bound %.4f)",
                num_nodes, self.degree, attempt, self.max_tries, gap, bound,
            )
            if gap > best_gap:
                best, best_gap = edges, gap
            if gap >= bound - _GAP_SLACK:
                break
        return best

    def __call__(self, g: dgl.DGLGraph) -> dgl.DGLGraph:
        check_homogeneous(g, "g", allow_block=False)
        edge_type_codes(g, "g")  # refuse an etype field of another meaning before any work
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        sizes = g.batch_num_nodes().tolist() if g.batch_size > 1 else [g.num_nodes()]
        srcs, dsts, offset = [], [], 0
        for member, size in enumerate(sizes):  # a loop over the graphs of a batch, not nodes
            try:
                src, dst = self._draw(size, generator)
            except DGLError as err:
                where = f"graph {member} of the batch: " if len(sizes) > 1 else ""
                raise DGLError(f"AddExpanderEdges: {where}{err}") from None
            srcs.append(src + offset)
            dsts.append(dst + offset)
            offset += size
        return append_typed_edges(g, torch.cat(srcs), torch.cat(dsts), int(EdgeType.EXPANDER))
