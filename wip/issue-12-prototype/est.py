"""The estimator: sampled risk-set candidates at each enrolled person's start date,
features at that date, exact strata + nearest neighbour, DiD with person-clustered
variance, balance (SMD) and a placebo DiD on the year before."""
import numpy as np
import statsmodels.api as sm

PY = 365.25
OFF, MUL = 4000, 16384          # key = pid * MUL + (date + OFF)


class Index:
    """Observed events for fast window queries."""

    def __init__(self, d):
        self.d = d
        k = d["adm_kept"]
        self.pid = d["adm_pid"][k]
        self.date = d["adm_date"][k]
        self.los = d["adm_los"][k]
        self.key = self.pid * MUL + self.date + OFF
        self.cum_los = np.concatenate([[0], np.cumsum(self.los)])
        dis = self.key + self.los                   # discharge key
        self.cummax_dis = np.maximum.accumulate(dis)
        self.ap_key = d["ap_pid"] * MUL + d["ap_date"] + OFF
        self.bu_key = d["bu_pid"] * MUL + d["bu_date"] + OFF
        # by date, for pools
        o = np.argsort(self.date, kind="stable")
        self.bd_date, self.bd_pid = self.date[o], self.pid[o]
        dd = self.date + self.los
        o = np.argsort(dd, kind="stable")
        self.dis_date, self.dis_pid = dd[o], self.pid[o]
        self.dis_key = np.sort(self.pid * MUL + dd + OFF)
        # oracle (diagnostic only): admissions as they would be without service X's
        # effect (X's thinning undone, the other service's kept)
        self.key_nox = []
        for x in (0, 1):
            other = 1 - x
            keep = d["adm_u"] < np.where(d["adm_act"][:, other], d["rr"][other], 1.0) if "adm_u" in d else k
            self.key_nox.append(d["adm_pid"][keep] * MUL + d["adm_date"][keep] + OFF)
        o = np.argsort(d["bu_date"], kind="stable")
        self.bu_bydate, self.bu_pid_bydate = d["bu_date"][o], d["bu_pid"][o]

    def count(self, key, pid, lo, hi):
        return (np.searchsorted(key, pid * MUL + hi + OFF)
                - np.searchsorted(key, pid * MUL + lo + OFF))

    def adm(self, pid, lo, hi):
        return self.count(self.key, pid, lo, hi)

    def bed_days(self, pid, lo, hi):
        """Bed days up to hi of emergency spells admitted in [lo, hi)."""
        a = np.searchsorted(self.key, pid * MUL + lo + OFF)
        b = np.searchsorted(self.key, pid * MUL + hi + OFF)
        tot = self.cum_los[b] - self.cum_los[a]
        # truncate the last spell (only the last can run past hi, approximately)
        last = b - 1
        has = b > a
        over = np.zeros(pid.size)
        lk = last[has]
        over[has] = np.maximum(self.date[lk] + self.los[lk] - hi[has], 0)
        return tot - over


def features(ix, pid, t):
    """Features of persons pid at dates t (arrays)."""
    d = ix.d
    f = {}
    f["active"] = (d["act_from"][pid] <= t) & (t < d["act_to"][pid])
    f["age"] = d["age"][pid] + t / PY
    f["female"] = (d["sex"][pid] == 1).astype(float)
    f["sexc"] = d["sex"][pid]
    f["imd"] = d["imd"][pid]
    f["adm90"] = ix.adm(pid, t - 90, t)
    f["adm365"] = ix.adm(pid, t - 365, t)
    f["bd90"] = ix.bed_days(pid, t - 90, t)
    f["bd365"] = ix.bed_days(pid, t - 365, t)
    f["adm_pre2"] = ix.adm(pid, t - 730, t - 365)
    f["bd_pre2"] = ix.bed_days(pid, t - 730, t - 365)
    # last spell admitted before t: discharge (running max within person)
    b = np.searchsorted(ix.key, pid * MUL + t + OFF)
    has = (b > 0)
    has[has] = ix.pid[b[has] - 1] == pid[has]
    dis = np.full(pid.size, -1e9)
    dis[has] = ix.cummax_dis[b[has] - 1] - pid[has] * MUL - OFF
    f["inpatient"] = dis > t
    f["since_dis"] = np.clip(t - dis, 0, 366).astype(float)   # 366 = none in a year
    f["appts90"] = ix.count(ix.ap_key, pid, t - 90, t)
    f["appts365"] = ix.count(ix.ap_key, pid, t - 365, t)
    f["burst30"] = (ix.count(ix.bu_key, pid, t - 30, t) > 0).astype(float)
    b = np.searchsorted(ix.bu_key, pid * MUL + t + OFF)
    has = b > 0
    has[has] = d["bu_pid"][b[has] - 1] == pid[has]
    lastb = np.full(pid.size, -1e9)
    lastb[has] = d["bu_date"][b[has] - 1]
    f["since_bu"] = np.clip(t - lastb, 0, 366).astype(float)
    reg = d["act_from"][pid] <= t - 28
    f["n_ltc"] = d["n_ltc"][pid] * reg
    f["meds"] = d["meds"][pid] * reg
    seen = ix.adm(pid, np.maximum(t - 730, -1095), t) > 0
    f["charlson"] = d["charl"][pid] * seen
    return f


def cell_features(ix, pid, t):
    """What exact matching needs, from admissions, bursts, LTC, age and sex only."""
    d = ix.d
    f = {"active": (d["act_from"][pid] <= t) & (t < d["act_to"][pid]),
         "age": d["age"][pid] + t / PY, "sexc": d["sex"][pid],
         "adm90": ix.adm(pid, t - 90, t), "adm365": ix.adm(pid, t - 365, t),
         "burst30": (ix.count(ix.bu_key, pid, t - 30, t) > 0).astype(float),
         "n_ltc": d["n_ltc"][pid] * (d["act_from"][pid] <= t - 28)}
    b = np.searchsorted(ix.key, pid * MUL + t + OFF)
    has = b > 0
    has[has] = ix.pid[b[has] - 1] == pid[has]
    dis = np.full(pid.size, -1e9)
    dis[has] = ix.cummax_dis[b[has] - 1] - pid[has] * MUL - OFF
    f["inpatient"] = dis > t
    f["since_dis"] = np.clip(t - dis, 0, 366).astype(float)
    return f


RISK_VARS = ["age", "age2", "female", "imd", "appts365", "meds", "n_ltc", "adm365",
             "lbd365", "charlson"]


def design(f):
    X = np.column_stack([
        f["age"], f["age"] ** 2 / 100, f["female"], f["imd"], f["appts365"], f["meds"],
        f["n_ltc"], np.minimum(f["adm365"], 10), np.log1p(f["bd365"]), f["charlson"]])
    return sm.add_constant(X, has_constant="add")


def logit_fit(X, y, w=None, iters=30, ridge=1.0):
    """Newton-Raphson logistic regression (no large intermediate matrices)."""
    mu = X.mean(0)
    sdv = X.std(0)
    sdv[sdv == 0] = 1
    mu[sdv == 1] = 0
    Z = (X - mu) / sdv
    Z[:, 0] = 1.0
    b = np.zeros(X.shape[1])
    for _ in range(iters):
        eta = Z @ b
        p = 1 / (1 + np.exp(-eta))
        W = p * (1 - p) * (1 if w is None else w)
        P = ridge * np.eye(Z.shape[1])
        P[0, 0] = 0
        H = (Z * W[:, None]).T @ Z + P
        step = np.linalg.solve(H, Z.T @ ((y - p) * (1 if w is None else w)) - P @ b)
        b += step
        if np.abs(step).max() < 1e-6:
            break
    # back to the original scale
    beta = b / sdv
    beta[0] = b[0] - (b[1:] * mu[1:] / sdv[1:]).sum()
    return beta


def fit_prog(ix, beta, t0=-365):
    """Prognostic score: Poisson model of emergency admissions in the 12 months after
    T0 = A - 365 on features at T0, whole population (no one's follow-up after T0 is
    used for matching at later dates except through this fit)."""
    d = ix.d
    pid = np.arange(d["n"])
    t = np.full(pid.size, float(t0))
    f = features(ix, pid, t)
    keep = f["active"] & ~f["inpatient"]
    f = {k: v[keep] for k, v in f.items()}
    f["lrisk"] = design(f) @ beta
    f["lbd365"] = np.log1p(f["bd365"])
    f["lbd90"] = np.log1p(f["bd90"])
    pk = pid[keep]
    hi = np.minimum(t0 + 365, d["act_to"][pk])
    days = hi - t0
    y = ix.adm(pk, np.full(pk.size, float(t0)), hi)
    ok = days > 0
    X = bc_design({k: v[ok] for k, v in f.items()})
    return poisson_fit(X, y[ok].astype(float), np.log(days[ok] / PY), np.ones(ok.sum()))


def fit_risk(ix, t0=-365):
    """The pipeline's model emulated: any emergency admission in the 12 months after
    T0 = A - 365, on features at T0."""
    d = ix.d
    pid = np.arange(d["n"])
    t = np.full(pid.size, float(t0))
    f = features(ix, pid, t)
    keep = f["active"]
    y = ix.adm(pid, t, t + 365) > 0
    m = sm.Logit(y[keep], design({k: v[keep] for k, v in f.items()})).fit(disp=0)
    return m.params


def outcomes(ix, pid, s, stop=None, key=None, enr=None):
    """Events and person-time (days): pre2 [s-730, s-365), pre1 [s-365, s),
    post [s, min(s+365, end)); windows start no earlier than registration or A-1095.
    `stop` censors the post window (e.g. at a control's own later enrolment)."""
    d = ix.d
    a0 = np.maximum(d["act_from"][pid], -1095)
    a1 = d["act_to"][pid]
    out = {}
    for name, lo, hi in (("pre2", s - 730, s - 365), ("pre1", s - 365, s), ("post", s, s + 365)):
        lo_ = np.maximum(lo, a0)
        hi_ = np.minimum(hi, a1)
        if name == "post" and stop is not None:
            hi_ = np.minimum(hi_, stop)
        hi_ = np.maximum(hi_, lo_)
        out[name + "_d"] = (hi_ - lo_).astype(float)
        kk = ix.key if key is None else key
        out[name + "_e"] = ix.count(kk, pid, lo_, hi_).astype(float)
        if name == "post" and enr is not None:
            # events admitted while the person is enrolled in the service
            es, ee = enr
            a_ = np.clip(es, lo_, hi_)
            b_ = np.clip(ee, lo_, hi_)
            b_ = np.maximum(a_, b_)
            a_ = np.where(np.isfinite(a_), a_, hi_)
            b_ = np.where(np.isfinite(b_), b_, hi_)
            out["post_in"] = ix.count(kk, pid, a_, b_).astype(float)
            out["post_ind"] = (b_ - a_).astype(float)
    return out


def matched_set_clusters(tpid, cpid):
    """Cluster id per record: connected components of the graph linking each enrolled
    person to their controls (union-find over persons), so that a matched set and any
    person appearing in two sets are one cluster."""
    people, inv = np.unique(np.concatenate([tpid, cpid]), return_inverse=True)
    parent = np.arange(people.size)

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    it, ic = inv[:tpid.size], inv[tpid.size:]
    for a_, b_ in zip(it, ic):
        ra, rb = find(a_), find(b_)
        if ra != rb:
            parent[ra] = rb
    return np.array([find(x) for x in range(people.size)])[inv]


def did(rec, a="pre1", b="post"):
    """Weighted DiD of rates per 1,000 PY, linearised variance clustered by person.
    rec: dict with arrays g (1 treated, 0 control), w, cl (person), and windows."""
    g, w, cl = rec["g"], rec["w"], rec["cl"]
    res = {}
    z = np.zeros(g.size)
    for grp, sign in ((1, 1.0), (0, -1.0)):
        m = g == grp
        for per, ps in ((a, -1.0), (b, 1.0)):
            E = (w[m] * rec[per + "_e"][m]).sum()
            D = (w[m] * rec[per + "_d"][m]).sum()
            r = E / D
            res[(grp, per)] = r * PY * 1000
            z[m] += sign * ps * w[m] * (rec[per + "_e"][m] - r * rec[per + "_d"][m]) / D
    est = (res[(1, b)] - res[(1, a)]) - (res[(0, b)] - res[(0, a)])
    # cluster sums
    u, inv = np.unique(cl, return_inverse=True)
    zc = np.bincount(inv, weights=z, minlength=u.size)
    se = np.sqrt((zc ** 2).sum()) * PY * 1000
    return dict(est=est, se=se, t_pre=res[(1, a)], t_post=res[(1, b)],
                c_pre=res[(0, a)], c_post=res[(0, b)])


def did_switch(rec, inkey="post_in"):
    """Plain DiD D, and D corrected for enrolment in the service during follow-up
    (of the enrolled: their own; of controls: a later one) under a constant rate ratio
    psi while enrolled: untreated post events = out + in / psi for everyone, so
    D = (1/psi - 1)(C_in - T_in) and the effect on the enrolled,
    T_in (1 - 1/psi), is D * T_in / (T_in - C_in) (rates per person-year of
    post-period time). Delta-method variance, clustered by person."""
    g, w, cl = rec["g"], rec["w"], rec["cl"]
    zD = np.zeros(g.size)
    R = {}
    for grp, sign in ((1, 1.0), (0, -1.0)):
        m = g == grp
        for per, ps in (("pre1", -1.0), ("post", 1.0)):
            E = (w[m] * rec[per + "_e"][m]).sum()
            Dd = (w[m] * rec[per + "_d"][m]).sum()
            r = E / Dd
            R[(grp, per)] = r
            zD[m] += sign * ps * w[m] * (rec[per + "_e"][m] - r * rec[per + "_d"][m]) / Dd
    D = (R[(1, "post")] - R[(1, "pre1")]) - (R[(0, "post")] - R[(0, "pre1")])
    z_in, IN = {}, {}
    for grp in (1, 0):
        m = g == grp
        Dd = (w[m] * rec["post_d"][m]).sum()
        IN[grp] = (w[m] * rec[inkey][m]).sum() / Dd
        z = np.zeros(g.size)
        z[m] = w[m] * (rec[inkey][m] - IN[grp] * rec["post_d"][m]) / Dd
        z_in[grp] = z
    Ti, Ci = IN[1], IN[0]
    den = Ti - Ci
    est = D * Ti / den if den > 0 else np.nan
    z = (Ti / den) * zD - (D * Ci / den ** 2) * z_in[1] + (D * Ti / den ** 2) * z_in[0]
    u, inv = np.unique(cl, return_inverse=True)
    zc = np.bincount(inv, weights=z, minlength=u.size)
    k = PY * 1000
    return dict(est=est * k, se=np.sqrt((zc ** 2).sum()) * k, T_in=Ti * k, C_in=Ci * k,
                psi=1 / (1 - D / den) if den > 0 else np.nan)


def poisson_fit(X, y, off, w, iters=30, ridge=1.0):
    mu0 = X.mean(0)
    sdv = X.std(0)
    sdv[sdv == 0] = 1
    mu0[sdv == 1] = 0
    Z = (X - mu0) / sdv
    Z[:, 0] = 1.0
    b = np.zeros(X.shape[1])
    b[0] = np.log((w * y).sum() / (w * np.exp(off)).sum())
    P = ridge * np.eye(Z.shape[1])
    P[0, 0] = 0
    def ll(b):
        eta = Z @ b + off
        return (w * (y * eta - np.exp(eta))).sum() - 0.5 * b @ P @ b
    cur = ll(b)
    for _ in range(iters):
        mu = np.exp(Z @ b + off)
        H = (Z * (w * mu)[:, None]).T @ Z + P
        step = np.linalg.solve(H, Z.T @ (w * (y - mu)) - P @ b)
        t = 1.0
        while t > 1e-4:
            new = ll(b + t * step)
            if new >= cur - 1e-9:
                break
            t /= 2
        b = b + t * step
        cur = new
        if np.abs(t * step).max() < 1e-6:
            break
    beta = b / sdv
    beta[0] = b[0] - (b[1:] * mu0[1:] / sdv[1:]).sum()
    return beta


BAL_VARS = ["age", "female", "imd", "adm90", "adm365", "bd90", "bd365", "since_dis",
            "since_bu", "appts90", "appts365", "burst30", "meds", "n_ltc", "charlson",
            "lrisk", "adm_pre2", "bd_pre2"]
# the matching variables the issue names (sex as female; age continuous)
ISSUE_VARS = ["age", "female", "adm90", "adm365", "bd90", "bd365", "lrisk"]


def smd(xt, xc, wc=None, sd_ref=None):
    """Standardised mean difference; denominator sqrt((var_t + var_c) / 2) of the
    samples compared, or sd_ref if given."""
    if wc is None:
        wc = np.ones(xc.size)
    mt, mc = xt.mean(), np.average(xc, weights=wc)
    vt, vc = xt.var(), np.average((xc - mc) ** 2, weights=wc)
    sd = np.sqrt((vt + vc) / 2) if sd_ref is None else sd_ref
    return 0.0 if sd == 0 else (mt - mc) / sd


def age_band(a):
    return np.minimum(np.floor(a / 5), 18)


def strata(f, spec):
    """Exact-matching key."""
    k = np.zeros(f["age"].size, dtype=np.int64)
    parts = {
        "sex": (f["sexc"], 3),
        "age5": (age_band(f["age"]), 19),
        "age10": (np.minimum(np.floor(f["age"] / 10), 9), 10),
        "adm90": (np.minimum(f["adm90"], 2), 3),
        "adm365": (np.minimum(f["adm365"], 5), 6),
        "adm365_3": (np.minimum(f["adm365"], 3), 4),
        "ltc": (np.minimum(f["n_ltc"], 5), 6),
        "ltc3": (np.minimum(f["n_ltc"], 3), 4),
        "ltc4": (np.minimum(f["n_ltc"], 4), 5),
        "agec": (np.digitize(f["age"], [45, 65, 75, 85]), 5),
        "burst30": (f["burst30"], 2),
        "dis30": (np.digitize(f["since_dis"], [8, 31, 91, 366]), 5),
        "pre2_2": (np.minimum(f.get("adm_pre2", np.zeros(f["age"].size)), 2), 3),
        "pre2_3": (np.minimum(f.get("adm_pre2", np.zeros(f["age"].size)), 3), 4),
    }
    for p in spec:
        v, m = parts[p]
        k = k * m + v.astype(np.int64)
    return k



DEFAULT = dict(
    K=100,                 # candidates sampled from each trigger pool the enrolled person is in
    KG=25,                 # plus this many from the whole population
    strata=("adm90", "adm365_3", "burst30"),
    dist=("lps",),         # lps = logit time-dependent propensity, lrisk = logit risk
    calvar="lps",
    caliper=0.2,           # in SD of calvar (enrolled and candidates)
    M=1,                   # controls per enrolled
    replace=True,
    controls="risk_set",   # risk_set | exclude_future | censor_control | censor_pair
    index="start",         # start | month
    pools=True,            # trigger pools; False = general population only (K + KG)
    ps=True,
    ps_weighted=True,      # weight candidates by 1 / inclusion probability in the PS fit
)


def bc_design(f):
    cols = [f["age"], f["age"] ** 2 / 100, f["female"], f["imd"], np.minimum(f["n_ltc"], 6),
            f["meds"], np.minimum(f["adm90"], 4), np.minimum(f["adm365"], 8), f["lbd365"],
            f["lbd90"], f["appts90"], f["appts365"], f["burst30"], np.log1p(f["since_dis"]),
            f["charlson"], f["lrisk"]]
    return sm.add_constant(np.column_stack(cols).astype(float), has_constant="add")


def ps_design(f, timing=True, extra=()):
    sd_ = f["since_dis"] if timing else np.full(f["age"].size, 999.0)
    sb = f["since_bu"] if timing else np.full(f["age"].size, 999.0)
    cols = [f["age"], f["age"] ** 2 / 100, f["female"], f["imd"],
            f["n_ltc"] == 1, f["n_ltc"] == 2, f["n_ltc"] == 3, f["n_ltc"] >= 4,
            f["meds"], f["adm90"] == 1, f["adm90"] >= 2,
            f["adm365"] == 1, f["adm365"] == 2, f["adm365"] == 3, f["adm365"] >= 4,
            np.minimum(f["adm365"], 8), f["lbd365"], f["lbd90"],
            sd_ <= 2, (sd_ > 2) & (sd_ <= 6), (sd_ > 6) & (sd_ <= 13), (sd_ > 13) & (sd_ <= 27),
            (sd_ > 27) & (sd_ <= 42), (sd_ > 42) & (sd_ <= 90),
            sb <= 1, (sb > 1) & (sb <= 6), (sb > 6) & (sb <= 28), (sb > 28) & (sb <= 90),
            f["appts90"], f["appts365"], f["charlson"], f["lrisk"]] + [f[e] for e in extra]
    return sm.add_constant(np.column_stack(cols).astype(float), has_constant="add")


USED_MAP = {"sex": ["female"], "age5": ["age"], "age10": ["age"], "agec": ["age"],
            "adm90": ["adm90"], "adm365": ["adm365"], "adm365_3": ["adm365"],
            "ltc": ["n_ltc"], "ltc3": ["n_ltc"], "ltc4": ["n_ltc"], "burst30": ["burst30"],
            "dis30": ["since_dis"], "pre2_2": ["adm_pre2"], "pre2_3": ["adm_pre2"],
            "lbd365": ["bd365"], "lbd90": ["bd90"], "lbd_pre2": ["bd_pre2"], "ltc_c": ["n_ltc"],
            "lrisk": ["lrisk"], "age": ["age"], "meds": ["meds"], "charlson": ["charlson"],
            "appts90": ["appts90"], "appts365": ["appts365"], "n_ltc": ["n_ltc"],
            "adm_pre2": ["adm_pre2"], "since_dis": ["since_dis"], "lsince_dis": ["since_dis"], "female": ["female"], "sex_f": ["female"]}


def used_vars(o):
    """Issue's matching variables plus every variable the config matches on."""
    v = set(ISSUE_VARS)
    for p in list(o["strata"]) + list(o["dist"]):
        v.update(USED_MAP.get(p, []))
    return sorted(v)


def entropy_balance(X, target, w0, iters=100, tol=1e-8):
    """Weights w = w0 exp(Z lambda) / normaliser with sum(w) = sum(w0) and weighted mean of X
    equal to target (Z = X standardised). Newton on the convex dual
    log sum w0 exp((Z - z_t) lambda). Returns (w, info)."""
    mu, sd = X.mean(0), X.std(0)
    keep = sd > 0
    Z = (X[:, keep] - mu[keep]) / sd[keep]
    zt = (target[keep] - mu[keep]) / sd[keep]
    D = Z - zt
    lam = np.zeros(D.shape[1])
    def obj(l):
        e = D @ l
        m = e.max()
        return m + np.log((w0 * np.exp(e - m)).sum())
    cur = obj(lam)
    for it in range(iters):
        e = D @ lam
        p = w0 * np.exp(e - e.max())
        p /= p.sum()
        g = p @ D
        if np.abs(g).max() < tol:
            break
        H = (D * p[:, None]).T @ D - np.outer(g, g) + 1e-10 * np.eye(D.shape[1])
        step = -np.linalg.solve(H, g)
        t = 1.0
        while t > 1e-6:
            new = obj(lam + t * step)
            if new <= cur + 1e-4 * t * (g @ step):
                break
            t /= 2
        lam = lam + t * step
        cur = new
    e = D @ lam
    w = w0 * np.exp(e - e.max())
    w *= w0.sum() / w.sum()
    ess = w.sum() ** 2 / (w ** 2).sum()
    return w, dict(eb_iters=it, eb_maxgrad=float(np.abs(g).max()), eb_ess=float(ess),
                   eb_ess0=float(w0.sum() ** 2 / (w0 ** 2).sum()), eb_wmax=float(w.max() / w.mean()))


def month_start(s):
    dt = np.datetime64("2026-04-01") + s.astype("timedelta64[D]")
    return (dt.astype("datetime64[M]").astype("datetime64[D]")
            - np.datetime64("2026-04-01")).astype(float)


def evaluate(ix, beta, service, opts=None, rng=None, prog=None):
    o = dict(DEFAULT)
    if opts:
        o.update(opts)
    d = ix.d
    n = d["n"]
    rng = rng or np.random.default_rng(0)
    enr_s = d["enr_s"][:, service]
    tp = np.flatnonzero(enr_s < np.inf)
    s = enr_s[tp]
    # history is everything up to and including the start day; follow-up starts the
    # day after (c = s + 1), for enrolled and controls alike
    c = s + 1
    t_idx = month_start(s) if o["index"] == "month" else c.copy()
    ft = features(ix, tp, t_idx)
    # --- candidates: K per trigger pool + KG from everyone, at the same date ---
    cand_i, cand_p, cand_pi, pool_defs = [], [], [], []
    for i in range(tp.size):
        ti = t_idx[i]
        pools = []              # (name, members, window)
        if o["pools"] == "anchored":
            # people discharged from an emergency admission about as long ago as the
            # enrolled person's last discharge, and with a GP burst about as long ago
            x = ft["since_dis"][i]
            if x <= 90:
                w = max(o.get("anchor_w", (3, 0.25))[0], np.ceil(o.get("anchor_w", (3, 0.25))[1] * x))
                lo_, hi_ = ti - x - w, min(ti - x + w + 1, ti)
                a, b = np.searchsorted(ix.dis_date, [lo_, hi_])
                pools.append(("dis", np.unique(ix.dis_pid[a:b]), (lo_, hi_)))
            elif ft["adm365"][i] > 0:
                a, b = np.searchsorted(ix.bd_date, [ti - 365, ti - 90])
                pools.append(("a365", np.unique(ix.bd_pid[a:b]), None))
            y = ft["since_bu"][i]
            if y <= 90:
                w = max(o.get("anchor_w", (3, 0.25))[0], np.ceil(o.get("anchor_w", (3, 0.25))[1] * y))
                lo_, hi_ = ti - y - w, min(ti - y + w + 1, ti)
                a, b = np.searchsorted(ix.bu_bydate, [lo_, hi_])
                pools.append(("bu", np.unique(ix.bu_pid_bydate[a:b]), (lo_, hi_)))
        elif o["pools"] == "strat":
            pass                # handled below, vectorised
        elif o["pools"]:
            if ft["adm90"][i] > 0:
                a, b = np.searchsorted(ix.bd_date, [ti - 90, ti])
                pools.append(("a90", np.unique(ix.bd_pid[a:b]), None))
            elif ft["adm365"][i] > 0:
                a, b = np.searchsorted(ix.bd_date, [ti - 365, ti - 90])
                pools.append(("a365", np.unique(ix.bd_pid[a:b]), None))
            if ft["burst30"][i] > 0:
                a, b = np.searchsorted(ix.bu_bydate, [ti - 30, ti])
                pools.append(("b30", np.unique(ix.bu_pid_bydate[a:b]), None))
        kg = o["KG"] if o["pools"] else o["K"] + o["KG"]
        lists = [rng.integers(0, n, kg)]
        fr = np.zeros((1, 4))
        for k, (name, L, win) in enumerate(pools):
            fr[0, k] = min(1.0, o["K"] / max(L.size, 1))
            lists.append(L if L.size <= o["K"] else rng.choice(L, o["K"], replace=False))
        cc = np.unique(np.concatenate(lists))
        cc = cc[cc != tp[i]]
        cand_i.append(np.full(cc.size, i))
        cand_p.append(cc)
        cand_pi.append(np.repeat(fr, cc.size, 0))
        pool_defs.append(pools)
    if o["pools"] == "strat":
        # stratified candidate sampling: the pool (emergency admission in the 90 days
        # before, else in the 365 days before, else a GP burst in the 30 days before,
        # else everyone), its members' exact-matching cell computed at the enrolled
        # person's date from cheap tables (admissions, bursts, LTC, age, sex), and K
        # drawn from those in the enrolled person's cell
        kt_all = strata(ft, o["strata"])
        for i in range(tp.size):
            ti = t_idx[i]
            if ft["adm90"][i] > 0:
                a, b = np.searchsorted(ix.bd_date, [ti - 90, ti])
                L = np.unique(ix.bd_pid[a:b])
            elif ft["adm365"][i] > 0:
                a, b = np.searchsorted(ix.bd_date, [ti - 365, ti - 90])
                L = np.unique(ix.bd_pid[a:b])
            elif ft["burst30"][i] > 0:
                a, b = np.searchsorted(ix.bu_bydate, [ti - 30, ti])
                L = np.unique(ix.bu_pid_bydate[a:b])
            else:
                L = rng.integers(0, n, 20 * o["K"])
            L = L[L != tp[i]]
            fl = cell_features(ix, L, np.full(L.size, ti))
            L = L[(strata(fl, o["strata"]) == kt_all[i]) & fl["active"] & ~fl["inpatient"]
                  & (d["enr_s"][L, service] >= ti)]
            if L.size > o["K"]:
                L = rng.choice(L, o["K"], replace=False)
            cand_i[i] = np.concatenate([cand_i[i], np.full(L.size, i)])
            cand_p[i] = np.concatenate([cand_p[i], L])
            cand_pi[i] = np.concatenate([cand_pi[i], np.zeros((L.size, 4))])
    ci = np.concatenate(cand_i)
    cp = np.concatenate(cand_p)
    fr = np.concatenate(cand_pi)
    tc = t_idx[ci]
    fc = features(ix, cp, tc)
    # inclusion probability: KG/n + sum over the pools drawn of K/|pool| if a member
    pi = np.full(ci.size, kg / n)
    starts_c = np.searchsorted(ci, np.arange(tp.size + 1))
    for i in range(tp.size):
        sl = slice(starts_c[i], starts_c[i + 1])
        for k, (name, L, win) in enumerate(pool_defs[i]):
            if starts_c[i] < starts_c[i + 1]:
                pi[sl] += fr[starts_c[i], k] * np.isin(cp[sl], L)
    pi = np.minimum(pi, 1.0)
    own = d["enr_s"][cp, service]
    elig = fc["active"] & ~fc["inpatient"]
    if o["controls"] == "exclude_future":
        elig &= own == np.inf
    else:
        elig &= own >= tc                     # not enrolled on or before the start day
    ci, cp, tc, pi = ci[elig], cp[elig], tc[elig], pi[elig]
    fc = {k: v[elig] for k, v in fc.items()}
    for f in (ft, fc):
        f["lrisk"] = design(f) @ beta
        f["ltc_c"] = np.minimum(f["n_ltc"], 5) * 1.0
        f["lbd365"] = np.log1p(f["bd365"])
        f["lbd90"] = np.log1p(f["bd90"])
        f["dis7"] = (f["since_dis"] <= 7) * 1.0
        f["dis42"] = (f["since_dis"] <= 42) * 1.0
        f["lbd_pre2"] = np.log1p(f["bd_pre2"])
        f["lsince_dis"] = np.log1p(f["since_dis"])
        f["sex_f"] = f["female"]
        if prog is not None:
            f["lprog"] = bc_design(f) @ prog
    # --- time-dependent propensity: enrolled vs the sampled risk set --------------
    if o["ps"]:
        ex = o.get("ps_extra", ())
        Xt, Xc = ps_design(ft, o.get("ps_timing", True), ex), ps_design(fc, o.get("ps_timing", True), ex)
        ya = np.concatenate([np.ones(tp.size), np.zeros(ci.size)])
        wa = np.concatenate([np.ones(tp.size), 1 / pi if o["ps_weighted"] else np.ones(ci.size)])
        sub = o.get("ps_sub")
        if sub and ci.size > sub:
            # fit on a random subsample of the candidates, weights scaled up to match
            keep = np.sort(rng.choice(ci.size, sub, replace=False))
            sel = np.concatenate([np.arange(tp.size), tp.size + keep])
            wsub = wa.copy()
            wsub[tp.size:] *= ci.size / sub
            bps = logit_fit(np.vstack([Xt, Xc[keep]]), ya[sel], wsub[sel])
        else:
            bps = logit_fit(np.vstack([Xt, Xc]), ya, wa)
        ft["lps"], fc["lps"] = Xt @ bps, Xc @ bps
    kt = strata(ft, o["strata"])
    kc = strata(fc, o["strata"])
    calv = o["calvar"]
    scale = (lambda v: ft[v].std()) if o.get("sd_treated") else (lambda v: np.concatenate([ft[v], fc[v]]).std())
    cal = o["caliper"] * scale(calv)
    dist = np.zeros(ci.size)
    for v in o["dist"]:
        sd_v = scale(v) or 1.0
        dist += o.get("dist_w", {}).get(v, 1.0) * ((fc[v] - ft[v][ci]) / sd_v) ** 2
    dist = np.sqrt(dist)
    ok = (kc == kt[ci]) & (np.abs(fc[calv] - ft[calv][ci]) <= cal)
    has_stratum = np.bincount(ci, weights=(kc == kt[ci]), minlength=tp.size) > 0
    has_ok = np.bincount(ci, weights=ok, minlength=tp.size) > 0  # before fallback
    # --- matching: greedy, enrolled in random order ---------------------------------
    # with fallback strata (coarser levels) the level is a lexicographic first key:
    # a candidate at a finer level always beats one matched only at a coarser level
    level = np.zeros(ci.size)
    if o.get("fallback"):
        exact = kc == kt[ci]
        lv = np.where(exact, 0, 99)
        for j, spec in enumerate(o["fallback"], start=1):
            e2 = strata(fc, spec) == strata(ft, spec)[ci]
            lv = np.where((lv == 99) & e2, j, lv)
        level = lv
        ok = (lv < 99) & (np.abs(fc[calv] - ft[calv][ci]) <= cal)
    order = np.lexsort((dist, level, ~ok, ci))
    ci_o, cp_o, ok_o = ci[order], cp[order], ok[order]
    starts = np.searchsorted(ci_o, np.arange(tp.size + 1))
    chosen = []
    used = set()
    for i in rng.permutation(tp.size):
        got = 0
        for r in range(starts[i], starts[i + 1]):
            if not ok_o[r]:
                break
            if not o["replace"]:
                if cp_o[r] in used:
                    continue
                used.add(cp_o[r])
            chosen.append(order[r])
            got += 1
            if got == o["M"]:
                break
    chosen = np.array(chosen, dtype=int)
    mi = ci[chosen]
    matched = np.unique(mi)
    exact_share = float((level[chosen] == 0).mean()) if chosen.size else np.nan
    nm = np.bincount(mi, minlength=tp.size)
    wc = 1.0 / nm[mi]
    eb_info = {}
    if o.get("eb"):
        # entropy balancing of the matched controls (Hainmueller 2012): weights
        # wc * exp(X lambda), normalised to the same total, so that the weighted control
        # means equal the matched enrolled means exactly on o["eb"] variables
        Xc_ = np.column_stack([fc[v][chosen] for v in o["eb"]]).astype(float)
        tgt = np.array([ft[v][matched].mean() for v in o["eb"]])
        wc, eb_info = entropy_balance(Xc_, tgt, wc)
    # --- outcomes ---------------------------------------------------------------------
    stop = None
    if o["controls"] in ("censor_control", "censor_pair"):
        stop = d["enr_s"][cp[chosen], service] + 1      # their own enrolment, if later
    enr_t = (d["enr_s"][tp[matched], service], d["enr_e"][tp[matched], service])
    enr_c = (d["enr_s"][cp[chosen], service], d["enr_e"][cp[chosen], service])
    ot = outcomes(ix, tp[matched], c[matched], enr=enr_t)
    oc = outcomes(ix, cp[chosen], c[mi], stop=stop, enr=enr_c)
    if o.get("bc"):
        # regression bias correction (Abadie & Imbens 2011, multiplicative): a Poisson
        # model of post-period admissions fitted on the sampled risk set (weights 1/pi);
        # each control's post events scaled by mu(X_enrolled) / mu(X_control)
        oall = outcomes(ix, cp, c[ci])
        Xc_ = bc_design(fc)
        okd = oall["post_d"] > 0
        bb = poisson_fit(Xc_[okd], oall["post_e"][okd], np.log(oall["post_d"][okd] / PY), 1 / pi[okd])
        eta_t = bc_design(ft) @ bb
        fac = np.exp(eta_t[mi] - (Xc_ @ bb)[chosen])
        oc["post_e"] = oc["post_e"] * fac
        oc["post_in"] = oc["post_in"] * fac
    if o["controls"] == "censor_pair":
        st = np.full(tp.size, np.inf)
        np.minimum.at(st, mi, stop)
        ot = outcomes(ix, tp[matched], c[matched], stop=st[matched], enr=enr_t)
    rec = {k: np.concatenate([ot[k], oc[k]]) for k in ot}
    rec["g"] = np.concatenate([np.ones(matched.size), np.zeros(chosen.size)])
    rec["w"] = np.concatenate([np.ones(matched.size), wc])
    if o.get("cluster", "person") == "set":
        # records: enrolled (matched) then controls; link each control to its enrolled
        cl_pairs = matched_set_clusters(tp[mi], cp[chosen])
        comp_t = np.full(tp.size, -1)
        comp_t[mi] = cl_pairs[:mi.size]
        rec["cl"] = np.concatenate([comp_t[matched], cl_pairs[mi.size:]])
    else:
        rec["cl"] = np.concatenate([tp[matched], cp[chosen]])
    res = did(rec)
    pl = did(rec, a="pre2", b="pre1")
    # oracle: controls' outcomes without their own (later) enrolment in this service
    ocx = outcomes(ix, cp[chosen], c[mi], key=ix.key_nox[service])
    rec_x = dict(rec)
    for k_ in ocx:
        rec_x[k_] = np.concatenate([ot[k_], ocx[k_]])
    res_x = did(rec_x)
    sw = did_switch(rec)
    swt = did_switch(rec, "post_ind")
    oa = outcomes(ix, tp, c)
    naive = (oa["post_e"].sum() / oa["post_d"].sum()
             - oa["pre1_e"].sum() / oa["pre1_d"].sum()) * PY * 1000
    # --- truth ----------------------------------------------------------------------
    tr = d["truth"][service]
    assert np.array_equal(tr["pid"], tp)
    per = lambda m: (tr["y1"][m].sum() - tr["y0"][m].sum()) / tr["days"][m].sum() * PY * 1000
    allm = np.arange(tp.size)
    # --- balance: before = enrolled vs the risk set (candidates weighted 1/pi) ---------
    after = {v: smd(ft[v][matched], fc[v][chosen], wc) for v in BAL_VARS}
    # ATT convention (Stuart 2010): the enrolled group's SD before matching
    after_t = {v: smd(ft[v][matched], fc[v][chosen], wc, sd_ref=ft[v].std() or 1.0) for v in BAL_VARS}
    before = {v: smd(ft[v], fc[v], 1 / pi) for v in BAL_VARS}
    own_c = d["enr_s"][cp[chosen], service]
    later = ((own_c < c[mi] + 365) & (own_c < d["act_to"][cp[chosen]])).mean()
    return dict(
        n_enrolled=tp.size, n_matched=matched.size, match_rate=matched.size / tp.size,
        n_cand=ci.size / tp.size, exact_share=exact_share, has_stratum=has_stratum.mean(), has_ok=has_ok.mean(), est=res["est"], se=res["se"],
        lo=res["est"] - 1.96 * res["se"], hi=res["est"] + 1.96 * res["se"],
        truth=per(allm), truth_m=per(matched),
        y0_rate=tr["y0"].sum() / tr["days"].sum() * PY * 1000,
        c_post=res["c_post"], t_pre=res["t_pre"], t_post=res["t_post"], c_pre=res["c_pre"],
        est_oracle=res_x["est"], placebo=pl["est"],
        sw_est=sw["est"], sw_se=sw["se"], sw_lo=sw["est"] - 1.96 * sw["se"],
        sw_hi=sw["est"] + 1.96 * sw["se"],
        swt_est=swt["est"], swt_se=swt["se"], swt_lo=swt["est"] - 1.96 * swt["se"],
        swt_hi=swt["est"] + 1.96 * swt["se"],
        max_smd_issue=max(abs(after[v]) for v in ISSUE_VARS),
        max_smd_used=max(abs(after[v]) for v in used_vars(o)), T_in=sw["T_in"], C_in=sw["C_in"], psi=sw["psi"], placebo_se=pl["se"], naive=naive,
        max_smd_after=max(abs(x) for x in after.values()),
        max_smd_after_t=max(abs(x) for x in after_t.values()), smd_after_t=after_t,
        max_smd_before=max(abs(x) for x in before.values()),
        smd_after=after, smd_before=before, later_enrolled_controls=later,
        latent={v: smd(d[v][tp[matched]], d[v][cp[chosen]], wc) for v in ("need", "frail")},
        reuse=1 - np.unique(cp[chosen]).size / max(chosen.size, 1), **eb_info,
    )
