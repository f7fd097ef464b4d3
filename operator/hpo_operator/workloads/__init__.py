"""What a trial runs — a pod, a Job or any resource, and its checkpoint volume — built from the
trial template, and what a Job or resource trial says (observe.py), judged by core/podstate's rules
without a pod of its own. Pure; imports api/ and core/."""
