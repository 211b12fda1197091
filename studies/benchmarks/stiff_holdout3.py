"""A third stiff hold-out set for the must-hold of issue 14: three problems of the Bari
IVP test set (Mazzia & Magherini, "Test Set for IVP Solvers", Univ. Bari, release 2.4,
2008), none of them in the visible set, ``stiff_holdout.py`` or ``stiff_holdout2.py``.

Chosen for ways to fail the other sets do not have: a stiff circuit that oscillates at
two frequencies with diode exponentials (Newton far from its linear regime, thousands of
steps), a nonlinear mechanical system whose right-hand side solves a linear system and
whose Jacobian is dense, and a semi-discretised PDE whose boundary input switches off in
the middle of the span (a discontinuity in time that a step has to cross):

============  ==========================================================================
``ringmod``   RINGMOD, the ring modulator (Horneber 1976; Kampowsky, Rentrop & Schmidt
              1992; Bari ``ringmod``, ODE case ``C_s = 2e-12``): 15 equations, two
              input voltages ``0.5 sin(2e3 π t)`` and ``2 sin(2e4 π t)``, four diodes
              ``γ(e^{δ U} − 1)``, y(0) = 0.  Run on [0, 1e-4] (one period of the
              fast input) with a scipy reference: on the test set's [0, 1e-3] scipy
              Radau needs 213 000 steps (118 s) at rtol 1e-6 and a 1e-12 reference is
              out of reach.  ``ringmod(t1=1e-3)`` is the full problem with the Bari
              published y(1e-3) (RADAU5 at tight tolerance; scipy Radau at rtol 1e-6
              lands 6.3e-6 from it).
``beam``      BEAM, the elastic beam (Hairer & Wanner II, Sec. IV.10; ``beam_equation.f``
              of Hairer's test drivers, Bari ``beam``): 40 angles and 40 angular
              velocities, ``θ'' = C⁻¹(… )`` through a tridiagonal solve with ``cos``/
              ``sin`` of neighbouring angle differences, stiffness ``N⁴ = 2.56e6``,
              a load ``1.5 sin² t`` on ``t ≤ π`` (off after), y(0) = 0, [0, 5].
              Published reference at 5 (Hairer's ``beam_exact.txt``).
``medakzo``   Medical Akzo Nobel (Bari ``medakzo``; Akzo Nobel Central Research): a
              1-D reaction–diffusion PDE in ``ζ ∈ (0, 1]`` on ``N = 200`` points,
              ``u_t = α(ζ) u_ζ + β(ζ) u_ζζ − k u v``, ``v_t = −k u v``, ``k = 100``,
              ``c = 4``, ``α = 2(ζ − 1)³/c²``, ``β = (ζ − 1)⁴/c²``, boundary input
              ``u(0, t) = 2`` for ``t ≤ 5`` and 0 after, y(0): u = 0, v = 1; 400
              equations (``u_j, v_j`` interleaved), [0, 20].  Published reference at
              20 (Bari, PSIDE on a Cray C90, rtol = atol = 1e-10).  ``jac_sparsity``
              (band of width 2) set for scipy comparisons.
============  ==========================================================================

Sources read for the coefficients, spans, initial values and published end values
(all transcriptions of the Bari test set): ``beam_equation.f`` and ``beam_exact.txt``
of cpmech/hwode (Hairer's drivers); ReaK's ``iv_problems.hpp`` (RINGMOD and MEDAKZO
fields and final values) and John Ernsthausen's DASSL driver ``medakzo.f`` (MEDAKZO's
``SOLUT``, same 400 values); R's deTestSet (``ex_ring.R``: span and parameters).  The
code here is ours, vectorised (a torch field and its numpy twin, one formula).

Reference, error measure, step budget, verdicts, cells and report: those of
``stiff_holdout.py`` (this module registers its problems there and runs its ``main``):
scipy Radau at rtol 1e-12, atol = floors·1e-10, checked against scipy BDF and the
published value (``--check-refs``; ``scipy_reference(name, second=False)``, Radau only,
is what a sweep computes).  Floors (``atol_ratio``):

* ``ringmod``, ``beam``: 1e-3 of each component's peak over the span (scipy Radau, rtol
  1e-8; values in the code): ringmod 9.7e-10 (a current) … 8.7e-4, beam 3.9e-5 … 2.3e-3;
* ``medakzo``: 1e-3 for every component: ``v_j`` = 1 at the start, ``u_j`` peaks at
  0.02 … 2 where the front reaches and below 1e-3 beyond (1e-3 of a peak of 1e-160 would
  ask for relative accuracy on round-off).

    python studies/benchmarks/stiff_holdout3.py --check-refs
    python studies/benchmarks/stiff_holdout3.py --rtols 1e-3,1e-5,1e-7 --timeout 60
    python studies/benchmarks/stiff_holdout3.py --report

Defaults: every adaptive stiff method (``stiff_accuracy.stiff_methods()``, bdf and ndf
included), rtol 1e-3 … 1e-8; cells go to ``results/stiff_holdout3.jsonl``; the committed
table is ``stiff_holdout3_results.md``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

sys.path.insert(0, str(Path(__file__).parent))
import stiff_holdout
from stiff_holdout2 import _twin_xp

from odenet import problems as P

OUT = Path(__file__).parent / "results" / "stiff_holdout3.jsonl"


# 1e-3 of each component's peak over [0, 1e-4] (scipy Radau, rtol 1e-8): voltages
# y1 … y7 0.21 … 0.87, currents y8, y9 2.8e-6, 9.7e-7, y10 … y13 8.6e-3 … 9.1e-3,
# y14, y15 4.4e-4, 3.3e-4
_RINGMOD_FLOORS = np.array([
    2.7e-4, 2.2e-4, 5.2e-4, 5.1e-4, 5.1e-4, 5.0e-4, 8.7e-4, 2.8e-9, 9.7e-10, 9.1e-6, 8.8e-6,
    9.1e-6, 8.6e-6, 4.4e-7, 3.3e-7,
])  # fmt: skip

# Bari ringmod, y(1e-3) for C_s = 2e-12 (RADAU5 at tight tolerance)
_RINGMOD_REFERENCE = np.array([
    -0.2339057358486745e-1, -0.7367485485540825e-2, 0.2582956709291169,
    -0.4064465721283450, -0.4039455665149794, 0.2607966765422943, 0.1106761861269975,
    0.2939904342435596e-6, -0.2840029933642329e-7, 0.7267198267264553e-3,
    0.7929487196960840e-3, -0.7255283495698965e-3, -0.7941401968526521e-3,
    0.7088495416976114e-4, 0.2390059075236570e-4,
])  # fmt: skip


def ringmod(t1: float = 1e-4) -> P.Problem:
    c, cs, cp, r, rp = 1.6e-8, 2e-12, 1e-8, 25e3, 50.0
    lh, ls1, ls2, ls3 = 4.45, 2e-3, 5e-4, 5e-4
    rg1, rg2, rg3, ri, rc = 36.3, 17.3, 17.3, 50.0, 600.0
    gamma, delta = 40.67286402e-9, 17.7493332

    def rates(t, y, xp):
        uin1 = 0.5 * xp.sin(2e3 * math.pi * t)
        uin2 = 2.0 * xp.sin(2e4 * math.pi * t)
        # the four diode voltages and their currents γ(e^{δU} − 1)
        q1, q2, q3, q4 = (
            gamma * (xp.exp(delta * u) - 1.0)
            for u in (
                y[2] - y[4] - y[6] - uin2,
                -y[3] + y[5] - y[6] - uin2,
                y[3] + y[4] + y[6] + uin2,
                -y[2] - y[5] + y[6] + uin2,
            )
        )
        return xp.stack([
            (y[7] - 0.5 * y[9] + 0.5 * y[10] + y[13] - y[0] / r) / c,
            (y[8] - 0.5 * y[11] + 0.5 * y[12] + y[14] - y[1] / r) / c,
            (y[9] - q1 + q4) / cs,
            (-y[10] + q2 - q3) / cs,
            (y[11] + q1 - q3) / cs,
            (-y[12] - q2 + q4) / cs,
            (-y[6] / rp + q1 + q2 - q3 - q4) / cp,
            -y[0] / lh,
            -y[1] / lh,
            (0.5 * y[0] - y[2] - rg2 * y[9]) / ls2,
            (-0.5 * y[0] + y[3] - rg3 * y[10]) / ls3,
            (0.5 * y[1] - y[4] - rg2 * y[11]) / ls2,
            (-0.5 * y[1] + y[5] - rg3 * y[12]) / ls3,
            (-y[0] + uin1 - (ri + rg1) * y[13]) / ls1,
            (-y[1] - (rc + rg1) * y[14]) / ls1,
        ])  # fmt: skip

    f, f_numpy = _twin_xp(rates)
    return stiff_holdout._with_reference(
        P.Problem(
            f=f,
            y0=np.zeros(15),
            span=(0.0, t1),
            name="ringmod",
            description=f"RINGMOD ring modulator (Bari test set), C_s = 2e-12, [0, {t1:g}]",
            stiff=True,
            f_numpy=f_numpy,
            atol_ratio=_RINGMOD_FLOORS,
        ),
        _RINGMOD_REFERENCE if t1 == 1e-3 else None,
    )


# 1e-3 of each component's peak over [0, 5] (scipy Radau, rtol 1e-8): angles 0.039 …
# 1.43, velocities 0.065 … 2.31
_BEAM_FLOORS = np.array([
    3.9e-05, 0.00012, 0.00019, 0.00026, 0.00033, 0.0004, 0.00047, 0.00053, 0.0006, 0.00066,
    0.00071, 0.00077, 0.00082, 0.00087, 0.00092, 0.00096, 0.001, 0.001, 0.0011, 0.0011,
    0.0012, 0.0012, 0.0012, 0.0012, 0.0013, 0.0013, 0.0013, 0.0013, 0.0013, 0.0014, 0.0014,
    0.0014, 0.0014, 0.0014, 0.0014, 0.0014, 0.0014, 0.0014, 0.0014, 0.0014,
    6.5e-05, 0.00019, 0.00032, 0.00044, 0.00055, 0.00066, 0.00077, 0.00087, 0.00097, 0.0011,
    0.0012, 0.0012, 0.0013, 0.0014, 0.0015, 0.0016, 0.0016, 0.0017, 0.0018, 0.0018, 0.0019,
    0.0019, 0.002, 0.002, 0.002, 0.0021, 0.0021, 0.0021, 0.0022, 0.0022, 0.0022, 0.0022,
    0.0023, 0.0023, 0.0023, 0.0023, 0.0023, 0.0023, 0.0023, 0.0023,
])  # fmt: skip

# Hairer's beam_exact.txt, y(5): 40 angles then 40 angular velocities
_BEAM_REFERENCE = np.array([
    -0.005792366591294675, -0.016952985507199259, -0.027691033129713322,
    -0.038008156558781729, -0.047906168597422688, -0.057387104352737008,
    -0.066453273134522699, -0.075107305819780661, -0.083352197654124544,
    -0.091191346546446469, -0.098628587001297248, -0.105668220037774708,
    -0.112315039540924422, -0.118574355272698475, -0.124452012875526880,
    -0.129954411326390999, -0.135088518061004200, -0.139861881919410397,
    -0.144282644101482929, -0.148359547246256976, -0.152101942900106414,
    -0.155519797806080921, -0.158623699341992299, -0.161424860370167541,
    -0.163935123819275499, -0.166166967344037066, -0.168133508177817718,
    -0.169848508060189926, -0.171326378244038509, -0.172582184746215274,
    -0.173631653797526901, -0.174491177383960691, -0.175177818786287100,
    -0.175709317871242317, -0.176104096022807288, -0.176381260717507812,
    -0.176560609756417469, -0.176662635226010517, -0.176708527080694206,
    -0.176720176107510191,
    0.037473626808570053, 0.109911788012810762, 0.179836047447039129,
    0.247242730557127186, 0.312129382035491301, 0.374494737701689822,
    0.434338607372647125, 0.491662035432760524, 0.546467785483476383,
    0.598760970245279030, 0.648549361126755851, 0.695843516905088648,
    0.740657266848912124, 0.783008174791347177, 0.822917665884869456,
    0.860411030561688098, 0.895517550233742218, 0.928270826293034365,
    0.958708933474210358, 0.986874782150222219, 1.012816579967983789,
    1.036587736684594479, 1.058246826485315033, 1.077857811432700289,
    1.095490221995530989, 1.111219164319120026, 1.125125269269998022,
    1.137294526582397119, 1.147818025203744592, 1.156792131966898566,
    1.164318845152484938, 1.170505992580311363, 1.175467424328008220,
    1.179323003206967714, 1.182198586301326345, 1.184226111211404704,
    1.185543909813440450, 1.186297084230907673, 1.186637618874913665,
    1.186724615129383839,
])  # fmt: skip


def beam(n: int = 40) -> P.Problem:
    # C: the tridiagonal matrix of beam_equation.f, diagonal (1, 2, …, 2, 3) and
    # off-diagonal −cos(θ_i − θ_{i−1}); the load acts on t ≤ π only (as the Fortran's
    # `T.GT.PI` branch)
    diagonal = np.full(n, 2.0)
    diagonal[0], diagonal[-1] = 1.0, 3.0
    diagonal_t = torch.as_tensor(diagonal)

    def rates(t, y, xp, diagonal):
        theta, omega = y[:n], y[n:]
        d = theta[1:] - theta[:-1]
        s, c = xp.sin(d), xp.cos(d)
        zero = theta[:1] * 0
        load = 1.5 * xp.sin(t) ** 2 * (t <= math.pi)
        v = n**4 * xp.concatenate([
            -3 * theta[:1] + theta[1:2],
            theta[:-2] - 2 * theta[1:-1] + theta[2:],
            theta[-2:-1] - theta[-1:],
        ]) + n**2 * load * (xp.cos(theta) + xp.sin(theta))  # fmt: skip

        def times_d(x):
            # D x, D[i, i+1] = s_i, D[i, i−1] = −s_{i−1} (the sine part of the coupling)
            sp, xp_ = xp.concatenate([zero, s, zero]), xp.concatenate([zero, x, zero])
            return -sp[:-1] * xp_[:-2] + sp[1:] * xp_[2:]

        C = xp.diag(diagonal) - xp.diag(c, 1) - xp.diag(c, -1)
        w = xp.linalg.solve(C, times_d(v) + omega**2)
        return xp.concatenate([omega, C @ v + times_d(w)])

    def f(t, y):
        return rates(t, y, torch, diagonal_t.to(y.dtype))

    def f_numpy(t, y):
        return rates(t, y, np, diagonal)

    return stiff_holdout._with_reference(
        P.Problem(
            f=f,
            y0=np.zeros(2 * n),
            span=(0.0, 5.0),
            name="beam",
            description=f"BEAM elastic beam (Hairer & Wanner), {2 * n} equations, [0, 5]",
            stiff=True,
            f_numpy=f_numpy,
            atol_ratio=_BEAM_FLOORS if n == 40 else 1e-3,
        ),
        _BEAM_REFERENCE if n == 40 else None,
    )


# Bari medakzo, y(20) (PSIDE, Cray C90, rtol = atol = 1e-10): u_1, v_1, u_2, v_2, …
_MEDAKZO_REFERENCE = np.array([
    0.5113983840919909e-005, 0.1925112884312553e-143, 0.1027858770570419e-004,
    0.1890518289312031e-142, 0.1549349862635799e-004, 0.1774199325357386e-142,
    0.2075835344757462e-004, 0.5897341137981092e-143, 0.2607273610116854e-004,
    0.1093527900908030e-143, 0.3143617475695002e-004, 0.1188834841626416e-144,
    0.3684813884509626e-004, 0.9968323236025642e-147, 0.4230803594492533e-004,
    -0.2801994001528093e-146, 0.4781520853483223e-004, -0.7337417669341249e-147,
    0.5336893059800053e-004, -0.1209033101530330e-147, 0.5896840407836044e-004,
    -0.1430357497530360e-148, 0.6461275518112516e-004, -0.1063952641824646e-149,
    0.7030103051210320e-004, 0.7939969136126717e-152, 0.7603219304985662e-004,
    0.1568246940545520e-150, 0.8180511794465543e-004, 0.4074950357924872e-150,
    0.8761858813806752e-004, 0.5592746648679992e-150, 0.9347128979692480e-004,
    -0.5510388943414421e-151, 0.9936180755532036e-004, -0.2724738349250769e-149,
    0.1052886195582220e-003, -0.9327772452398718e-149, 0.1112500923002360e-003,
    -0.2182885200987554e-148, 0.1172444752530255e-003, -0.4041450806475518e-148,
    0.1232698952748828e-003, -0.5608157478395261e-148, 0.1293243507959787e-003,
    -0.2639662630908699e-148, 0.1354057057728661e-003, 0.1801866277537073e-147,
    0.1415116834059119e-003, 0.8464449882759417e-147, 0.1476398596134615e-003,
    0.2245234937355967e-146, 0.1537876562567258e-003, 0.3359213489153582e-146,
    0.1599523341096154e-003, -0.3085721171916412e-146, 0.1661309855680449e-003,
    -0.4465322607423735e-145, 0.1723205270935920e-003, -0.1970925996866384e-144,
    0.1785176913868402e-003, -0.6070953121563027e-144, 0.1847190192862588e-003,
    -0.1412011918930335e-143, 0.1909208513890961e-003, -0.2378861987352203e-143,
    0.1971193193914910e-003, -0.2380432473186974e-143, 0.2033103371458565e-003,
    -0.6522557638254663e-145, 0.2094895914345677e-003, 0.1784305601809064e-143,
    0.2156525324601176e-003, -0.1007474781780816e-142, 0.2217943640531935e-003,
    -0.5281511349479423e-142, 0.2279100336016016e-003, -0.1117525482975987e-141,
    0.2339942217046434e-003, -0.1127916494884468e-141, 0.2400413315594459e-003,
    -0.1633306916231411e-142, 0.2460454780878912e-003, 0.2708874035585891e-143,
    0.2520004768152150e-003, -0.2501941069702609e-142, 0.2578998325140575e-003,
    -0.2642308070750020e-141, 0.2637367276308081e-003, -0.3684887530751217e-139,
    0.2695040105145025e-003, -0.3647274179805887e-138, 0.2751941834723564e-003,
    -0.1255641406397419e-137, 0.2807993906802854e-003, -0.1694257216823904e-138,
    0.2863114059815211e-003, -0.1785516142939602e-136, 0.2917216206117258e-003,
    -0.3935939757647002e-135, 0.2970210308948898e-003, -0.2514765666933440e-134,
    0.3022002259608294e-003, -0.7200873856605984e-134, 0.3072493755423352e-003,
    -0.7539683247227422e-134, 0.3121582179180383e-003, 0.3738577086039426e-135,
    0.3169160480759169e-003, -0.2493582962172335e-131, 0.3215117061821543e-003,
    0.3039632438293726e-130, 0.3259335664508512e-003, 0.5321044068586611e-128,
    0.3301695265219917e-003, -0.1918129324351378e-126, 0.3342069974681551e-003,
    -0.1336929159252586e-124, 0.3380328945648600e-003, 0.9521748754010357e-123,
    0.3416336289752354e-003, 0.1001197393324181e-120, 0.3449951005170561e-003,
    0.2703860993866771e-119, 0.3481026916991771e-003, 0.4365133580297076e-119,
    0.3509412632351946e-003, 0.4898111237855383e-115, 0.3534951512648823e-003,
    0.1621439381962246e-112, 0.3557481665387581e-003, 0.3003220203772183e-110,
    0.3576835958481664e-003, 0.5931668289615909e-108, 0.3592842060126915e-003,
    0.2235590472383775e-105, 0.3605322507686931e-003, 0.1025457293602057e-102,
    0.3614094809374544e-003, 0.3496613568296336e-100, 0.3618971582890092e-003,
    0.4767073568395508e-098, 0.3619760735583436e-003, -0.2410784286794997e-095,
    0.3616265691144918e-003, -0.9188398110576038e-093, 0.3608285668302233e-003,
    0.1146623087995081e-089, 0.3595616017506735e-003, 0.1649638439865233e-086,
    0.3578048622135169e-003, 0.1215140240350217e-083, 0.3555372371311931e-003,
    0.7134490346394154e-081, 0.3527373712073181e-003, 0.4502515392738464e-078,
    0.3493837289247301e-003, 0.7138395988310312e-075, 0.3454546682115489e-003,
    0.9941693919247076e-071, 0.3409285247640208e-003, 0.2012859826753015e-066,
    0.3357837080804970e-003, 0.3598261520662423e-062, 0.3299988103392750e-003,
    0.5466580008990664e-058, 0.3235527293336597e-003, 0.6945384844951550e-054,
    0.3164248067597393e-003, 0.7275415527806026e-050, 0.3085949832350532e-003,
    0.6193143746524996e-046, 0.3000439715082906e-003, 0.4219255556214135e-042,
    0.2907534493998412e-003, 0.2263678154715720e-038, 0.2807062740884081e-003,
    0.9401607967545219e-035, 0.2698867194275612e-003, 0.2968231730793053e-031,
    0.2582807380350103e-003, 0.6987463944434805e-028, 0.2458762499428408e-003,
    0.1201641789884051e-024, 0.2326634596245027e-003, 0.1477169946829840e-021,
    0.2186352032185982e-003, 0.1268462422099779e-018, 0.2037873277440060e-003,
    0.7425015664001834e-016, 0.1881191040379240e-003, 0.2886826929895103e-013,
    0.1716336750388461e-003, 0.7252477041900172e-011, 0.1543385408702044e-003,
    0.1143390654212691e-008, 0.1362460820444338e-003, 0.1096625145716966e-006,
    0.1173741304462833e-003, 0.6190822732534586e-005, 0.9774701310627047e-004,
    0.1986273404756002e-003, 0.7740788649977313e-004, 0.3489773624098464e-002,
    0.5657119003189305e-004, 0.3234526094359604e-001, 0.3643334879766658e-004,
    0.1548747348410801e+000, 0.2003152841880950e-004, 0.4026980529594953e+000,
    0.9608297851720770e-005, 0.6649744834198490e+000, 0.4215537698495267e-005,
    0.8409284546320647e+000, 0.1753504402754791e-005, 0.9314946676956936e+000,
    0.7048158429518009e-006, 0.9720896201631835e+000, 0.2760943506466737e-006,
    0.9890204872799944e+000, 0.1057554501281432e-006, 0.9957930123519514e+000,
    0.3965142250779033e-007, 0.9984246531478463e+000, 0.1455273204279008e-007,
    0.9994229325942358e+000, 0.5226348147846279e-008, 0.9997932125999319e+000,
    0.1835610545325733e-008, 0.9999275409325039e+000, 0.6301078589385454e-009,
    0.9999751869380269e+000, 0.2112538351365564e-009, 0.9999917015131560e+000,
    0.6912550453447044e-010, 0.9999972914302640e+000, 0.2205932132514696e-010,
    0.9999991378543379e+000, 0.6860095639285670e-011, 0.9999997325855174e+000,
    0.2077324462852526e-011, 0.9999999192384585e+000, 0.6120038908594393e-012,
    0.9999999762710279e+000, 0.1752695518797070e-012, 0.9999999932230490e+000,
    0.4875001992978682e-013, 0.9999999981203191e+000, 0.1315706848908981e-013,
    0.9999999994941428e+000, 0.3442274192104633e-014, 0.9999999998680372e+000,
    0.8721783456154470e-015, 0.9999999999666630e+000, 0.2137938962858872e-015,
    0.9999999999918528e+000, 0.5064735930780995e-016, 0.9999999999980759e+000,
    0.1158284928109727e-016, 0.9999999999995613e+000, 0.2554350586347124e-017,
    0.9999999999999036e+000, 0.5425563935887811e-018, 0.9999999999999796e+000,
    0.1108623976460997e-018, 0.9999999999999958e+000, 0.2176490922739810e-019,
    0.9999999999999992e+000, 0.4100180074816888e-020, 0.9999999999999998e+000,
    0.7401919443964595e-021, 1.0, 0.1278745657114596e-021,
    1.0, 0.2111087049605767e-022, 1.0,
    0.3325632734364699e-023, 1.0, 0.4991515592566292e-024,
    1.0, 0.7126950428617158e-025, 1.0,
    0.9664740804131475e-026, 1.0, 0.1242716896959521e-026,
    1.0, 0.1512543532243458e-027, 1.0,
    0.1739533019752215e-028, 1.0, 0.1886942537979667e-029,
    1.0, 0.1926965705022792e-030, 1.0,
    0.1849021812823421e-031, 1.0, 0.1663798767415642e-032,
    1.0, 0.1401076830818626e-033, 1.0,
    0.1101818149402153e-034, 1.0, 0.8074224739509168e-036,
    1.0, 0.5501249196662931e-037, 1.0,
    0.3476859813132770e-038, 1.0, 0.2033489290876775e-039,
    1.0, 0.1097880013869247e-040, 1.0,
    0.5457825200381417e-042, 1.0, 0.2491675366427318e-043,
    1.0, 0.1041801880291617e-044, 1.0,
    0.3978066491064419e-046, 1.0, 0.1383174699098532e-047,
    1.0, 0.4365911791079500e-049, 1.0,
    0.1247057764661705e-050, 1.0, 0.3212728839963712e-052,
    1.0, 0.7439366703571565e-054, 1.0,
    0.1542770387822259e-055, 1.0, 0.2854454245592573e-057,
    1.0, 0.4693220411250150e-059, 1.0,
    0.6828458274546624e-061, 1.0, 0.8752952529541412e-063,
    1.0, 0.9838541433761416e-065, 1.0,
    0.9649177728609193e-067, 1.0, 0.8213596936190817e-069,
    1.0, 0.6033986647865674e-071, 1.0,
    0.3802531117966294e-073, 1.0, 0.2042261117698575e-075,
    1.0, 0.9282595096128614e-078, 1.0,
    0.3543587864454877e-080, 1.0, 0.1126779423370979e-082,
    1.0, 0.2957534367766753e-085, 1.0,
    0.6344600529877694e-088, 1.0, 0.1100279075462365e-090,
    1.0, 0.1523845293461783e-093, 1.0,
    0.1662696161555950e-096, 1.0, 0.1407578290673998e-099,
    1.0, 0.9086150803567186e-103, 1.0,
    0.4384339596163745e-106, 1.0, 0.1545482064392824e-109,
    1.0, 0.3874172613928345e-113, 1.0,
    0.6689452219441953e-117, 1.0, 0.7655680935317283e-121,
    1.0, 0.5538543899545850e-125, 1.0,
    0.2386173886563501e-129, 1.0, 0.5664887497790931e-134,
    1.0, 0.6671124967149171e-139, 1.0,
    0.3351973480286951e-144, 1.0, 0.5684315818559200e-150,
    1.0, 0.2142121793294590e-156, 1.0,
    0.6727117900187205e-164, 1.0, 0.0,
    1.0,
])  # fmt: skip


def medakzo(n: int = 200) -> P.Problem:
    k, c = 100.0, 4.0
    dzeta = 1.0 / n
    zeta = dzeta * np.arange(1, n + 1)
    alpha = 2 * (zeta - 1) ** 3 / c**2
    beta = (zeta - 1) ** 4 / c**2
    # ζ_N = 1: no transport at the far end (α = β = 0), exactly as the test set's last row
    alpha[-1] = beta[-1] = 0.0
    diffusion, advection = beta / dzeta**2, alpha / (2 * dzeta)
    coefficients_t = tuple(torch.as_tensor(a) for a in (diffusion, advection))

    def rates(t, y, xp, diffusion, advection):
        u, v = y[0::2], y[1::2]
        edge = u[:1] * 0
        phi = edge + 2.0 * (t <= 5.0)  # the boundary input, switched off after t = 5
        padded = xp.concatenate([phi, u, edge])
        left, right = padded[:-2], padded[2:]
        reaction = k * u * v
        du = (left - 2 * u + right) * diffusion + (right - left) * advection - reaction
        return xp.stack([du, -reaction], 1).reshape(-1)

    def f(t, y):
        return rates(t, y, torch, *(a.to(y.dtype) for a in coefficients_t))

    def f_numpy(t, y):
        return rates(t, y, np, diffusion, advection)

    # u_j couples to u_{j±1} (indices ±2) and v_j; v_j to u_j
    sparsity = scipy.sparse.diags(
        np.ones((5, 1)), [-2, -1, 0, 1, 2], shape=(2 * n, 2 * n), dtype=float
    )
    y0 = np.zeros(2 * n)
    y0[1::2] = 1.0
    return stiff_holdout._with_reference(
        P.Problem(
            f=f,
            y0=y0,
            span=(0.0, 20.0),
            name="medakzo",
            description=f"Medical Akzo Nobel (Bari test set), N = {n}, {2 * n} equations, "
            "[0, 20], input off at t = 5",
            stiff=True,
            f_numpy=f_numpy,
            # v_j = 1 at the start; u_j peaks at 0.02 … 2 where the front reaches (j ≲ 105)
            # and stays below 1e-3 beyond; the published values are accurate to ~1e-8 in
            # this measure only (PSIDE at 1e-10), not relative to the 1e-4 ends of u
            atol_ratio=1e-3,
            jac_sparsity=sparsity.tocsc(),
        ),
        _MEDAKZO_REFERENCE if n == 200 else None,
    )


HOLDOUT3 = {"ringmod": ringmod, "beam": beam, "medakzo": medakzo}
main = stiff_holdout.register(HOLDOUT3, OUT)
get = stiff_holdout.get


if __name__ == "__main__":
    sys.exit(main())
