import streamlit as st
st.title("5_rounds")
st.info("coming")
