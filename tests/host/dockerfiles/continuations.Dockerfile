# A comment before anything: no parser directive after it.

FROM scratch

RUN echo one \
    two \
# a comment inside a continuation is dropped

    three
ENV A=1 \  
    B=2

CMD ["a", \
     "b"]

   LABEL x=y
