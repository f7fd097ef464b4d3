"""What a trial runs — a pod, a Job or any resource, and its checkpoint volume — built from the
trial template, and how it is seen as one pod-shaped observation. Pure; imports api/ and core/."""
