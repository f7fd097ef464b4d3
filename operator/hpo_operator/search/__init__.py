"""The search: Optuna samplers and pruners behind one Suggester. The only floor that imports
Optuna; it imports api/ and core/."""
