"""Sharing agreements (DESIGN.md section 14): how a community's generation is allocated to its
members hour by hour or quarter-hour by quarter-hour (static, variable and dynamic
coefficients), what each member and the community gain from it (self-consumption,
self-sufficiency, savings, CO2), Italy's shared energy and its incentives, the coefficient
optimiser with the rules members agree on, its honest evaluation, the Spanish distributor's
coefficient file and the monthly settlement. Pure: numpy and scipy, no I/O, no clock.

Its door: the names below are what other packages may use; each is loaded from its module
on first use (`service.door`)."""

from typing import TYPE_CHECKING

from service.door import lazy_door

if TYPE_CHECKING:
    from community.allocation import DYNAMIC as DYNAMIC
    from community.allocation import KINDS as KINDS
    from community.allocation import STATIC as STATIC
    from community.allocation import VARIABLE as VARIABLE
    from community.allocation import Allocation as Allocation
    from community.allocation import MemberTotals as MemberTotals
    from community.allocation import Totals as Totals
    from community.allocation import allocate as allocate
    from community.allocation import dynamic_coefficients as dynamic_coefficients
    from community.allocation import equal_coefficients as equal_coefficients
    from community.allocation import summarise as summarise
    from community.evaluation import Comparison as Comparison
    from community.evaluation import MemberChange as MemberChange
    from community.evaluation import StrategyResult as StrategyResult
    from community.evaluation import compare as compare
    from community.evaluation import revision_changes as revision_changes
    from community.italy import Incentive as Incentive
    from community.italy import Plant as Plant
    from community.italy import incentive as incentive
    from community.italy import premium_eur_per_mwh as premium_eur_per_mwh
    from community.italy import shared_energy as shared_energy
    from community.optimiser import ENERGY as ENERGY
    from community.optimiser import MONEY as MONEY
    from community.optimiser import Problem as Problem
    from community.optimiser import RuleCost as RuleCost
    from community.optimiser import RuleError as RuleError
    from community.optimiser import Rules as Rules
    from community.optimiser import objective as objective
    from community.optimiser import optimise_static as optimise_static
    from community.optimiser import optimise_variable as optimise_variable
    from community.optimiser import rule_costs as rule_costs
    from community.optimiser import solve_lp as solve_lp
    from community.profiles import PROFILES as PROFILES
    from community.profiles import align_to_year as align_to_year
    from community.profiles import bdew_quarter_hours as bdew_quarter_hours
    from community.profiles import estimate_hourly as estimate_hourly
    from community.savings import TREE_KG_CO2_PER_YEAR as TREE_KG_CO2_PER_YEAR
    from community.savings import Tariff as Tariff
    from community.savings import co2_avoided_kg as co2_avoided_kg
    from community.savings import member_money_micro as member_money_micro
    from community.savings import money_weights as money_weights
    from community.savings import savings_micro as savings_micro
    from community.savings import trees as trees
    from community.settlement import MonthLine as MonthLine
    from community.settlement import monthly_settlement as monthly_settlement
    from community.settlement import settlement_csv as settlement_csv
    from community.spain import Fault as Fault
    from community.spain import FileRefused as FileRefused
    from community.spain import file_name as file_name
    from community.spain import hour_starts as hour_starts
    from community.spain import read_hourly_file as read_hourly_file
    from community.spain import round_coefficients as round_coefficients
    from community.spain import validate_file as validate_file
    from community.spain import write_fixed_file as write_fixed_file
    from community.spain import write_hourly_file as write_hourly_file
    from community.spain import year_hours as year_hours

__all__, __getattr__ = lazy_door(__name__, __file__)
