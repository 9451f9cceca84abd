"""Synthetic data generating process for the service evaluation (issue 12).

Days are integers relative to A (A = 0); history [-1095, 0) as in
pipeline/src/synth/mod.rs generate_chunk.  Person-level and event-level draws follow
that generator; services are new: enrolment by referral after an emergency discharge or
a burst of GP appointments (observable triggers), and a rate ratio of emergency
admissions while enrolled, with both potential outcomes simulated by common random
numbers (each admission has a uniform u; it is observed iff u < product of the rate
ratios of the services active at its admission date).
"""
import numpy as np

A_DOY = 90            # A = 2026-04-01 is day 90 of its year
HIST = 1095           # spells: three years
EVENT_HIST = 730      # appointments and prescribing: two years
WINDOW = 730          # enrolments start in [A-730, A)

AGE_BANDS = [(0, 4, 5.4), (5, 9, 5.9), (10, 14, 6.0), (15, 19, 5.6), (20, 24, 5.9),
             (25, 29, 6.7), (30, 34, 7.0), (35, 39, 6.7), (40, 44, 6.3), (45, 49, 6.4),
             (50, 54, 6.9), (55, 59, 6.7), (60, 64, 5.9), (65, 69, 5.0), (70, 74, 5.1),
             (75, 79, 3.7), (80, 84, 2.6), (85, 89, 1.6), (90, 100, 0.9)]

# Services: 0 = VW01 (virtual ward), 1 = CM01 (community matron).
DEFAULT_SERVICE = dict(
    # VW01 step-down: at each observed emergency discharge d,
    # p = min(0.5, vw_down * exp(0.04 (age_t - 60)) * (1 + 0.3 min(n_ltc, 4)))
    vw_down=0.025,
    # VW01 step-up: at each GP-appointment burst (>= 4 appointments in 14 days) at t,
    # p = min(0.5, vw_up * exp(0.04 (age_t - 60)) * (1 + 0.3 min(n_ltc, 4)))
    vw_up=0.008,
    # CM01 admissions route: at each observed emergency discharge d with n365 >= 2
    # observed emergency admissions admitted in (d - 365, d],
    # p = min(0.5, cm_adm * (min(n365, 5) - 1) * (1 + 0.3 min(n_ltc, 4)) * exp(0.02 (age_t - 60)))
    cm_adm=0.03,
    # CM01 GP route: at each burst at t with n_ltc >= 2,
    # p = min(0.5, cm_up * (1 + 0.3 min(n_ltc, 4)))
    cm_up=0.02,
    # Enrolment depending on an unobservable: every p multiplied by frail ** unobs
    unobs=0.0,
)


def generate(seed, n=100_000, rr=(1.0, 0.8), svc=None, bump=0.0):
    """Return a dict of numpy arrays.  rr = (RR of VW01, RR of CM01).
    bump > 0 adds a self-exciting readmission process (robustness scenario): each
    emergency discharge spawns Poisson(bump * frail) further admissions at delays
    Exp(mean 21 days) (which can spawn in turn)."""
    p = dict(DEFAULT_SERVICE)
    if svc:
        p.update(svc)
    rng = np.random.default_rng(seed)
    # --- people -----------------------------------------------------------
    shares = np.array([b[2] for b in AGE_BANDS])
    band = rng.choice(len(AGE_BANDS), size=n, p=shares / shares.sum())
    lo = np.array([b[0] for b in AGE_BANDS])[band]
    hi = np.array([b[1] for b in AGE_BANDS])[band]
    age = rng.integers(lo, hi + 1)
    u = rng.integers(0, 1000, n)
    sex = np.where(u <= 1, 2, np.where(u <= 508, 1, 0))      # 1 = F, 0 = M, 2 = U
    base_imd = rng.uniform(1, 10, n)                          # practice-like IMD
    imd = np.clip(np.round(base_imd + rng.uniform(-2.5, 2.5, n)), 1, 10)
    imd = np.where(rng.random(n) < 0.01, 5.0, imd)
    z = rng.standard_normal(n)
    need = 0.8 * z + 0.035 * np.maximum(age - 30.0, 0) + 0.07 * (5.5 - imd) - 1.0
    frail = rng.gamma(2.0, 0.5, n)
    need_y = need[:, None] + 0.35 * rng.standard_normal((n, 3))   # year 0 = [-365, 0)
    birth = np.minimum(-A_DOY - np.floor(365.25 * age) + rng.integers(0, 365, n), -1)
    new_reg = rng.random(n) < 0.08
    start = np.where(new_reg, rng.integers(-HIST, 0, n), -20000)
    start = np.maximum(start, birth)
    end_from = np.maximum(start, -HIST)
    has_end = rng.random(n) < 0.04
    end = np.where(has_end, end_from + np.floor(rng.random(n) * (0 - end_from)), np.inf)
    death = np.full(n, np.inf)
    undecided = np.ones(n, bool)
    for y in (2, 1, 0):
        hz = np.minimum(np.exp(-9.8 + 0.085 * age + 0.5 * need_y[:, y]), 0.6)
        hit = undecided & (rng.random(n) < hz)
        d = -365 * (y + 1) + rng.integers(0, 365, n)
        ok = hit & (d >= start) & (d >= birth)
        death[ok] = d[ok]
        undecided &= ~ok
    act_from = np.maximum(start, birth).astype(float)
    act_to = np.minimum(np.minimum(0.0, end + 1), death + 1)
    n_ltc = np.minimum(rng.poisson(np.exp(-0.6 + 0.8 * need)), 12)
    npos = np.maximum(need, 0)
    # distinct repeat medicines: per LTC group 1 + Poisson(0.5 + 0.25 need+), plus others
    meds = n_ltc + rng.poisson(n_ltc * (0.5 + 0.25 * npos)) + rng.poisson(0.3 + 0.3 * npos)
    charl = (rng.binomial(n_ltc, 0.45) + (rng.random(n) < 0.01 + 0.0006 * age)
             + (rng.random(n) < np.minimum(0.004 * np.exp(0.6 * need), 0.5))
             + (rng.random(n) < 0.022))
    # --- emergency admissions, three years --------------------------------
    pid_l, date_l = [], []
    for y in range(3):
        ys, ye = -365 * (y + 1), -365 * y
        a0 = np.maximum(ys, act_from)
        a1 = np.minimum(ye, act_to)
        span = np.maximum(a1 - a0, 0)
        k = rng.poisson(np.exp(-2.9 + 1.3 * need_y[:, y]) * frail * span / 365.0)
        pid = np.repeat(np.arange(n), k)
        date = np.floor(a0[pid] + rng.random(pid.size) * span[pid])
        pid_l.append(pid)
        date_l.append(date)
    adm_pid = np.concatenate(pid_l)
    adm_date = np.concatenate(date_l)
    if bump > 0:
        gen_pid, gen_date = adm_pid, adm_date
        for _ in range(6):
            los = np.floor(-np.log(rng.random(gen_pid.size)) * (2 + 2.5 * npos[gen_pid]))
            k = rng.poisson(bump * frail[gen_pid])
            cp = np.repeat(gen_pid, k)
            cd = np.repeat(gen_date + los, k) + np.floor(rng.exponential(21.0, cp.size))
            ok = (cd < act_to[cp]) & (cd >= act_from[cp])
            gen_pid, gen_date = cp[ok], cd[ok]
            adm_pid = np.concatenate([adm_pid, gen_pid])
            adm_date = np.concatenate([adm_date, gen_date])
            if gen_pid.size == 0:
                break
    order = np.lexsort((adm_date, adm_pid))
    adm_pid, adm_date = adm_pid[order], adm_date[order]
    adm_los = np.floor(-np.log(rng.random(adm_pid.size)) * (2 + 2.5 * npos[adm_pid]))
    adm_u = rng.random(adm_pid.size)           # common random number for the effect
    # --- GP appointments, two years -----------------------------------------
    pid_l, date_l = [], []
    for y in range(2):
        ys, ye = -365 * (y + 1), -365 * y
        a0 = np.maximum(ys, act_from)
        a1 = np.minimum(ye, act_to)
        span = np.maximum(a1 - a0, 0)
        k = rng.poisson(np.exp(1.8 + 0.45 * need_y[:, y]) * frail * span / 365.0)
        pid = np.repeat(np.arange(n), k)
        pid_l.append(pid)
        date_l.append(np.floor(a0[pid] + rng.random(pid.size) * span[pid]))
    ap_pid = np.concatenate(pid_l)
    ap_date = np.concatenate(date_l)
    order = np.lexsort((ap_date, ap_pid))
    ap_pid, ap_date = ap_pid[order], ap_date[order]
    # bursts: the 4th appointment within 14 days
    b = np.zeros(ap_pid.size, bool)
    b[3:] = (ap_pid[3:] == ap_pid[:-3]) & (ap_date[3:] - ap_date[:-3] <= 13)
    bu_pid, bu_date = ap_pid[b], ap_date[b]

    # --- services: sequential referral on the observed path -----------------
    rr = np.asarray(rr, float)
    enr_s = np.full((n, 2), np.inf)
    enr_e = np.full((n, 2), np.inf)
    route = np.full((n, 2), -1)                     # 0 admission route, 1 GP route
    adm_act = np.zeros((adm_pid.size, 2), bool)     # service active at admission date
    kept = np.ones(adm_pid.size, bool)
    # persons with any trigger
    a_start = np.searchsorted(adm_pid, np.arange(n + 1))
    b_start = np.searchsorted(bu_pid, np.arange(n + 1))
    persons = np.unique(np.concatenate([adm_pid, bu_pid]))
    fr_mult = frail ** p["unobs"] if p["unobs"] else np.ones(n)
    R = rng.random((persons.size, 64))              # pre-drawn uniforms per person
    Ri = rng.integers(0, 1 << 30, (persons.size, 64))
    for q, i in enumerate(persons):
        ai = range(a_start[i], a_start[i + 1])
        bi = range(b_start[i], b_start[i + 1])
        ev = []
        for j in ai:
            ev.append((adm_date[j], 0, j))
            dis = adm_date[j] + adm_los[j]
            if dis < 0:
                ev.append((dis, 1, j))
        for j in bi:
            ev.append((bu_date[j], 2, j))
        ev.sort()
        rk = 0
        kept_dates = []
        lt = min(n_ltc[i], 4)
        for t, typ, j in ev:
            if typ == 0:
                act = (enr_s[i] <= t) & (t < enr_e[i])
                adm_act[j] = act
                prod = np.prod(np.where(act, rr, 1.0))
                kept[j] = adm_u[j] < prod
                if kept[j]:
                    kept_dates.append(t)
                continue
            if typ == 1 and not kept[j]:
                continue
            age_t = age[i] + t / 365.25
            for s_ in (0, 1):
                if enr_s[i, s_] < np.inf:
                    continue
                if s_ == 0:
                    base = p["vw_down"] if typ == 1 else p["vw_up"]
                    pr = base * np.exp(0.04 * (age_t - 60)) * (1 + 0.3 * lt)
                elif typ == 1:
                    n365 = sum(1 for x in kept_dates if t - 365 < x <= t)
                    if n365 < 2:
                        continue
                    pr = p["cm_adm"] * (min(n365, 5) - 1) * (1 + 0.3 * lt) * np.exp(0.02 * (age_t - 60))
                else:
                    if n_ltc[i] < 2:
                        continue
                    pr = p["cm_up"] * (1 + 0.3 * lt)
                pr = min(0.5, pr * fr_mult[i])
                if R[q, rk % 64] >= pr:
                    rk += 1
                    continue
                rk += 1
                ri = Ri[q, rk % 64]
                rk += 1
                if s_ == 0:
                    s = t + (ri % 3 if typ == 1 else ri % 2)
                    e = s + 7 + (ri >> 8) % 36
                else:
                    s = t + (7 + ri % 36 if typ == 1 else 7 + ri % 22)
                    e = s + 30 + (ri >> 8) % 271 if (ri >> 20) % 10 < 3 else np.inf
                if -WINDOW <= s < 0 and s >= act_from[i] and s < act_to[i]:
                    enr_s[i, s_] = s
                    enr_e[i, s_] = e
                    route[i, s_] = 0 if typ == 1 else 1
    # --- truth: both potential outcomes over [s, min(s+365, act_to)) --------
    truth = {}
    for s_ in (0, 1):
        who = np.flatnonzero(enr_s[:, s_] < np.inf)
        other = 1 - s_
        prod_other = np.where(adm_act[:, other], rr[other], 1.0)
        y0_keep = adm_u < prod_other        # no service s_ (the other as observed)
        # follow-up from the day after the start day (the start day is history)
        fu0 = enr_s[who, s_] + 1
        fu_end = np.minimum(fu0 + 365, act_to[who])
        # per admission membership in its person's follow-up
        pos = np.full(n, -1)
        pos[who] = np.arange(who.size)
        k = pos[adm_pid]
        inw = k >= 0
        inw[inw] = (adm_date[inw] >= fu0[k[inw]]) & (adm_date[inw] < fu_end[k[inw]])
        y1 = np.bincount(k[inw & kept], minlength=who.size)
        y0 = np.bincount(k[inw & y0_keep], minlength=who.size)
        truth[s_] = dict(pid=who, y1=y1, y0=y0, days=np.maximum(fu_end - fu0, 0))
    return dict(n=n, age=age, sex=sex, imd=imd, need=need, frail=frail, n_ltc=n_ltc,
                meds=meds, charl=charl, act_from=act_from, act_to=act_to,
                adm_pid=adm_pid, adm_date=adm_date, adm_los=adm_los, adm_kept=kept, adm_u=adm_u,
                adm_act=adm_act, ap_pid=ap_pid, ap_date=ap_date, bu_pid=bu_pid,
                bu_date=bu_date, enr_s=enr_s, enr_e=enr_e, route=route, truth=truth,
                rr=rr)


if __name__ == "__main__":
    import time
    t0 = time.time()
    d = generate(1)
    print("secs", round(time.time() - t0, 1))
    n = d["n"]
    print("emergency admissions observed/yr per 1000:",
          d["adm_kept"][d["adm_date"] >= -365].sum() / n * 1000)
    print("appointments per person-yr:", d["ap_pid"].size / n / 2)
    print("bursts:", d["bu_pid"].size)
    for s_ in (0, 1):
        t = d["truth"][s_]
        print(["VW01", "CM01"][s_], "enrolled", t["pid"].size,
              "route GP share", (d["route"][t["pid"], s_] == 1).mean().round(3),
              "rate Y0/1000PY", round(t["y0"].sum() / (t["days"].sum() / 365.25) * 1000),
              "truth", round((t["y1"].sum() - t["y0"].sum()) / (t["days"].sum() / 365.25) * 1000, 1))
